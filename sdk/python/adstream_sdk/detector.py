"""Write adstream detectors in Python: plugins that read the published results of other plugins,
one window after the other, and remember across windows (the `detector` world of
wit/aggregation.wit).

A detector is a class; the host keeps what it remembers exactly-once (it asks for `save` after
every window, stores the bytes in Kafka with the window's results, and gives them back to `load`
after a crash, a restart or a rebalance):

    class Anomaly(Detector):
        def __init__(self, settings): ...          # the operator's --plugin-setting NAME:KEY=VALUE
        def observe(self, window, results): ...    # the window's records: [(key, value), ...]
        def save(self) -> bytes: ...               # everything it remembers (state_version)
        def load(self, data: bytes): ...           # and back, into a fresh instance

    WitWorld = detector(Anomaly, name="anomaly", version="0.1.0", description="...",
                        inputs=["ctr", "engagement"], outputs=["ad-anomalies"], state_version=1)

`results` are `Result`s: the plugin that published the record, its key, and its value as parsed
JSON (a dict). An exception in `__init__` refuses the plugin at start-up with its text (use it
for an unknown setting); one in `observe` skips the window (the host says so on the
plugin-errors topic and gives the detector back the state it saved after the window before).

The build script knows a detector by this module's import in `app.py`: it builds it against the
`detector` world instead of `aggregation`.
"""

import json
from typing import NamedTuple

from wit_world import WitWorld as _World
from wit_world.imports import types

from . import _failing, _record

__all__ = ["Detector", "Result", "detector", "setting"]


class Result(NamedTuple):
    """One record another plugin published for the window."""

    plugin: str
    key: str
    value: dict


class Detector:
    """What a detector remembers, and what it does with each window; subclass it."""

    def __init__(self, settings: dict):
        self.settings = settings

    def observe(self, window: types.Window, results: list) -> list:
        """The window's records: `(key, value)` pairs (value a dict or a JSON string), or
        `(topic, key, value)` triples for another of the plugin's output topics."""
        raise NotImplementedError

    def save(self) -> bytes:
        raise NotImplementedError

    def load(self, data: bytes) -> None:
        raise NotImplementedError


def setting(settings: dict, key: str, default, parse=float, check=None):
    """Reads one setting (the operator passes text): `default` when absent; a `ValueError`
    that names the setting when `parse` fails or `check` is false."""
    text = settings.get(key)
    if text is None:
        return default
    try:
        value = parse(text)
    except ValueError as e:
        raise ValueError(f"setting {key}={text!r}: {e}") from None
    if check is not None and not check(value):
        raise ValueError(f"setting {key}={text!r} is out of range")
    return value


def detector(cls, *, name, version, description, inputs, outputs, state_version):
    """The world class for componentize-py: one `cls` instance, made by `configure`."""
    info = types.PluginInfo(name, version, description, [], list(outputs), state_version)
    names = list(inputs)

    class World(_World):
        # componentize-py may make a new instance per call: the detector lives on the class.
        instance = None

        def describe(self):
            return info

        def inputs(self):
            return names

        def configure(self, settings):
            try:
                World.instance = cls(dict(settings))
            except Exception as e:
                raise _failing("configure", e)

        def observe(self, w, results):
            try:
                parsed = [Result(r.plugin, r.key, json.loads(r.value)) for r in results]
                return [_record(item) for item in World.instance.observe(w, parsed)]
            except Exception as e:
                raise _failing("observe", e)

        def save_state(self):
            return bytes(World.instance.save())

        def load_state(self, state):
            try:
                World.instance.load(bytes(state))
            except Exception as e:
                raise _failing("load-state", e)

    return World
