"""`misdetect`: a detector over `ctr`'s results that counts the windows it observed (its state)
and publishes the count with each window, until a window has a campaign named for a fault:

- `evil-raise`: `observe` raises (the call returns an error);
- `evil-loop`: `observe` loops forever (the host's deadline must interrupt it).

The host must skip that window and give the detector back the state it saved after the window
before. Only for the host's tests; `scripts/build-plugins.sh` builds it into `target/test-plugins/`.
"""

import json

from adstream_sdk.detector import Detector, detector


class Misdetect(Detector):
    def __init__(self, settings):
        self.seen = 0

    def observe(self, window, results):
        campaigns = {r.key for r in results}
        self.seen += 1
        if "evil-raise" in campaigns:
            raise RuntimeError("misdetect: a deliberate exception")
        if "evil-loop" in campaigns:
            while True:
                pass
        return [("count", {"windows_seen": self.seen, "window_start_ms": window.start_ms})]

    def save(self):
        return json.dumps({"seen": self.seen}).encode()

    def load(self, data):
        self.seen = json.loads(data)["seen"]


WitWorld = detector(
    Misdetect,
    name="misdetect",
    version="0.1.0",
    description="counts the windows it observed, and fails on demand (tests only)",
    inputs=["ctr"],
    outputs=["misdetect-results"],
    state_version=1,
)
