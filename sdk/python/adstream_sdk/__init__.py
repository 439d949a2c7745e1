"""Write adstream aggregation plugins in Python.

A plugin is a class with five methods, as in the Rust SDK (`adstream_abi::sdk::Aggregation`):
one instance is the accumulator of one window.

    class Engagement(Aggregation):
        def add(self, event): ...                  # fold one event in
        def emit(self, window): ...                # the window's records: [(key, value), ...]
        def encode(self) -> bytes: ...             # the accumulator as bytes (state_version)
        @classmethod
        def decode(cls, data: bytes): ...          # and back
        def merge(self, other): ...                # fold another instance's accumulator in

    WitWorld = plugin(Engagement, name="engagement-py", version="0.1.0", description="...",
                      wants=[IMPRESSION], outputs=["device-engagement-results"], state_version=1)

`plugin` returns the class componentize-py exports (it must be named `WitWorld` in the
plugin's `app.py`); it keeps one accumulator per open window, decodes the host's batches into
`Event`s and turns errors into the WIT's error results. In the adstream repository,
`bash scripts/build-plugins.sh` builds every `plugins/<name>/app.py` against `wit/` into
`target/plugins/<name>.wasm`; `adstream new-plugin NAME` writes a project of its own, anywhere,
with this SDK, the WIT and a `build.sh`.
"""

import json
from datetime import datetime, timezone

from componentize_py_types import Err
from wit_world import WitWorld as _World
from wit_world.imports import types

from .batch import CLICK, IMPRESSION, Event, Kind, decode_batch

__all__ = ["CLICK", "IMPRESSION", "Aggregation", "Event", "Kind", "decode_batch", "plugin", "rfc3339_ms", "to_json"]


def rfc3339_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as the host writes times: `2026-01-01T10:00:00.000Z`."""
    t = datetime.fromtimestamp(epoch_ms // 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def to_json(value: dict) -> str:
    """A record value as compact JSON, in the dict's key order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Aggregation:
    """The accumulator of one window; subclass it (see the module's text)."""

    def add(self, event: Event) -> None:
        raise NotImplementedError

    def emit(self, window: types.Window) -> list:
        """The window's records: `(key, value)` pairs (value a dict or a JSON string), or
        `(topic, key, value)` triples for another of the plugin's output topics."""
        raise NotImplementedError

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> "Aggregation":
        raise NotImplementedError

    def merge(self, other: "Aggregation") -> None:
        raise NotImplementedError


def _record(item) -> types.OutputRecord:
    topic, key, value = item if len(item) == 3 else ("", *item)
    return types.OutputRecord(topic, key, value if isinstance(value, str) else to_json(value))


def _failing(call: str, error: Exception) -> Err:
    return Err(f"{call}: {type(error).__name__}: {error}")


def plugin(aggregation, *, name, version, description, wants, outputs, state_version):
    """The world class for componentize-py: one `aggregation` instance per open window."""
    kinds = [types.EventKind(Kind(kind).value) for kind in wants]
    info = types.PluginInfo(name, version, description, kinds, list(outputs), state_version)
    # The host sends every kind of event; a plugin sees those it wants.
    wanted = {Kind(kind) for kind in wants}

    class World(_World):
        # componentize-py may make a new instance per call: the accumulators live on the class
        # (each component instance has an interpreter, so a class of its own).
        windows: dict = {}

        def describe(self):
            return info

        def process(self, batch):
            try:
                windows = World.windows
                for event in decode_batch(batch):
                    if event.kind not in wanted:
                        continue
                    acc = windows.get(event.window_start_ms)
                    if acc is None:
                        acc = windows[event.window_start_ms] = aggregation()
                    acc.add(event)
            except Exception as e:  # the whole batch is rejected: the host counts and logs it
                raise _failing("process", e)

        def close_window(self, w):
            acc = World.windows.pop(w.start_ms, None)
            if acc is None:
                return []
            try:
                return [_record(item) for item in acc.emit(w)]
            except Exception as e:
                raise _failing("close-window", e)

        def open_windows(self):
            return list(World.windows)

        def export_window(self, w):
            acc = World.windows.get(w.start_ms)
            return None if acc is None else bytes(acc.encode())

        def restore_window(self, w, state):
            try:
                World.windows[w.start_ms] = aggregation.decode(bytes(state))
            except Exception as e:
                raise _failing("restore-window", e)

        def merge_window(self, w, state):
            try:
                other = aggregation.decode(bytes(state))
                acc = World.windows.get(w.start_ms)
                if acc is None:
                    World.windows[w.start_ms] = other
                else:
                    acc.merge(other)
            except Exception as e:
                raise _failing("merge-window", e)

    return World
