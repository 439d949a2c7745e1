"""The Python SDK's batch decoder against the encoding's test vectors (sdk/test-vectors), which
the Rust implementation is checked against too. Plain Python: `python3 sdk/python/tests/test_batch.py`
(also run by `cargo test`, host/tests/integration/plugins.rs)."""

import json
from pathlib import Path
import struct
import sys
import unittest

# The codec alone: the package's __init__ needs the bindings componentize-py generates.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adstream_sdk"))
import batch  # noqa: E402

VECTORS = Path(__file__).resolve().parents[2] / "test-vectors"


class BatchV1(unittest.TestCase):
    def setUp(self):
        self.vector = json.loads((VECTORS / "batch-v1.json").read_text(encoding="utf-8"))
        self.bytes = bytes.fromhex(self.vector["hex"])

    def test_decodes_the_vector_s_events(self):
        events = list(batch.decode_batch(self.bytes))
        self.assertEqual(len(events), len(self.vector["events"]))
        for got, want in zip(events, self.vector["events"]):
            self.assertEqual(got.kind, batch.Kind(want["kind"]))
            for field, value in want.items():
                if field != "kind":
                    self.assertEqual(getattr(got, field), value, field)
        self.assertIn(batch.CLICK, [e.kind for e in events])

    def test_refuses_what_is_not_a_whole_batch(self):
        with self.assertRaises(ValueError):
            list(batch.decode_batch(b"ADB0" + self.bytes[4:]))
        with self.assertRaises(ValueError):
            list(batch.decode_batch(self.bytes + b"\0"))
        for cut in (len(self.bytes) - 1, 20):
            with self.assertRaises((ValueError, struct.error)):
                list(batch.decode_batch(self.bytes[:cut]))


if __name__ == "__main__":
    unittest.main()
