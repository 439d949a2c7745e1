"""`misbehave`, in Python: counts impressions per campaign until it sees an impression of a
campaign named for a fault, then commits that fault inside the `process` call, as the Rust
test plugin does:

- `evil-trap`: raises an exception (the call returns an error);
- `evil-loop`: loops forever (the host's deadline must interrupt it);
- `evil-oom`: allocates without end (the memory limit must stop it);
- `evil-merge`: counted, but `merge` drops the other instance's count of it (a broken merge,
  which `adstream check-plugin` must catch).

Only for the host's tests; `scripts/build-plugins.sh` builds it into `target/test-plugins/`.
"""

import json

from adstream_sdk import IMPRESSION, Aggregation, plugin, rfc3339_ms, to_json


class Misbehave(Aggregation):
    def __init__(self):
        self.counts = {}

    def add(self, event):
        campaign = event.campaign_id
        if campaign == "evil-trap":
            raise RuntimeError("misbehave: a deliberate exception")
        if campaign == "evil-loop":
            n = 0
            while True:
                n += 1
        if campaign == "evil-oom":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        self.counts[campaign] = self.counts.get(campaign, 0) + 1

    def emit(self, window):
        start, end = rfc3339_ms(window.start_ms), rfc3339_ms(window.end_ms)
        return [
            (c, to_json({"campaign_id": c, "window_start": start, "window_end": end, "impressions": n}))
            for c, n in sorted(self.counts.items())
        ]

    def encode(self):
        return json.dumps(self.counts).encode()

    @classmethod
    def decode(cls, data):
        acc = cls()
        acc.counts = json.loads(data)
        return acc

    def merge(self, other):
        for c, n in other.counts.items():
            if c == "evil-merge" and c in self.counts:
                continue  # deliberately wrong
            self.counts[c] = self.counts.get(c, 0) + n


WitWorld = plugin(
    Misbehave,
    name="misbehave",
    version="0.1.0",
    description="counts impressions per campaign, and commits a fault on demand (tests only, Python)",
    wants=[IMPRESSION],
    outputs=["misbehave-results"],
    state_version=1,
)
