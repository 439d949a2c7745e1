"""The adstream batch encoding, version 1, as `process` receives it (wit/aggregation.wit).

Plain Python, with no WIT import, so that it can be tested anywhere: `sdk/python/tests` checks it
against the test vectors in `sdk/test-vectors`, which the Rust implementation is checked against
too.

    batch  = magic "ADB1" | count: u32 | event * count
    event  = kind: u8 (0 impression, 1 click) | window-start-ms: i64 | event-time-ms: i64
           | impression-time-ms: i64 | cost: f64
           | campaign-id | ad-id | device-type | browser | user-id
    string = len: u16 | UTF-8 bytes
    (all little-endian)
"""

from dataclasses import dataclass
from enum import IntEnum
import struct


class Kind(IntEnum):
    """The kinds of event (the WIT's `event-kind`)."""

    IMPRESSION = 0
    CLICK = 1


IMPRESSION = Kind.IMPRESSION
CLICK = Kind.CLICK

_MAGIC = b"ADB1"
_HEAD = struct.Struct("<4sI")
_FIXED = struct.Struct("<Bqqqd")
_LEN = struct.Struct("<H")


@dataclass
class Event:
    """One event of a batch. A click carries its impression's campaign, ad, device type, browser
    and cost, and its own `user_id` and event time; `impression_time_ms` is the clicked
    impression's time (an impression's own time for an impression)."""

    kind: Kind
    window_start_ms: int
    event_time_ms: int
    impression_time_ms: int
    cost: float
    campaign_id: str
    ad_id: str
    device_type: str
    browser: str
    user_id: str


def decode_batch(batch: bytes):
    """The events of a batch, in order; raises ValueError (or struct.error) if it is malformed."""
    magic, count = _HEAD.unpack_from(batch, 0)
    if magic != _MAGIC:
        raise ValueError(f"not an adstream batch (magic {magic!r})")
    at = _HEAD.size
    for _ in range(count):
        kind, window, event_time, impression_time, cost = _FIXED.unpack_from(batch, at)
        at += _FIXED.size
        strings = []
        for _ in range(5):
            (n,) = _LEN.unpack_from(batch, at)
            at += _LEN.size
            if at + n > len(batch):
                raise ValueError("a string runs past the end of the batch")
            strings.append(batch[at : at + n].decode("utf-8"))
            at += n
        yield Event(Kind(kind), window, event_time, impression_time, cost, *strings)
    if at != len(batch):
        raise ValueError(f"{len(batch) - at} bytes after the last event")
