"""`engagement-py`: the `engagement` aggregation written in Python, with the Rust plugin's
output to the byte: impressions and the exact number of distinct users per device type and
window, to `device-engagement-results` (SPEC "Results")."""

import struct

from adstream_sdk import IMPRESSION, Aggregation, plugin, rfc3339_ms, to_json

_COUNT = struct.Struct("<Q")
_LEN = struct.Struct("<I")


class Engagement(Aggregation):
    """One window: per device type, its impressions and the set of its users."""

    def __init__(self):
        self.devices = {}  # device type -> [impressions, set of user ids]

    def add(self, event):
        device = self.devices.get(event.device_type)
        if device is None:
            device = self.devices[event.device_type] = [0, set()]
        device[0] += 1
        device[1].add(event.user_id)

    def emit(self, window):
        start, end = rfc3339_ms(window.start_ms), rfc3339_ms(window.end_ms)
        return [
            (
                device_type,
                to_json(
                    {
                        "device_type": device_type,
                        "window_start": start,
                        "window_end": end,
                        "impressions": impressions,
                        "unique_users": len(users),
                    }
                ),
            )
            for device_type, (impressions, users) in sorted(self.devices.items())
        ]

    # The state: device count, then per device its type, impressions, user count and users
    # (strings as u32 length + UTF-8).
    def encode(self):
        out = [_COUNT.pack(len(self.devices))]
        for device_type, (impressions, users) in self.devices.items():
            out += [_text(device_type), _COUNT.pack(impressions), _COUNT.pack(len(users))]
            out += [_text(u) for u in users]
        return b"".join(out)

    @classmethod
    def decode(cls, data):
        acc, at = cls(), 0

        def count():
            nonlocal at
            (n,) = _COUNT.unpack_from(data, at)
            at += _COUNT.size
            return n

        def text():
            nonlocal at
            (n,) = _LEN.unpack_from(data, at)
            at += _LEN.size + n
            return data[at - n : at].decode("utf-8")

        for _ in range(count()):
            device_type = text()
            impressions = count()
            users = {text() for _ in range(count())}
            acc.devices[device_type] = [impressions, users]
        if at != len(data):
            raise ValueError(f"{len(data) - at} bytes after the state")
        return acc

    def merge(self, other):
        for device_type, (impressions, users) in other.devices.items():
            mine = self.devices.setdefault(device_type, [0, set()])
            mine[0] += impressions
            mine[1] |= users


def _text(s):
    b = s.encode("utf-8")
    return _LEN.pack(len(b)) + b


WitWorld = plugin(
    Engagement,
    name="engagement-py",
    version="0.1.0",
    description="impressions and exact unique users per device type and window (Python)",
    wants=[IMPRESSION],
    outputs=["device-engagement-results"],
    state_version=1,
)
