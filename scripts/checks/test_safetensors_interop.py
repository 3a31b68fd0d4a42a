"""Interop: files written by our Swift SafeTensorsWriter load in the reference Python reader.

Tests/Fixtures/safetensors/swift-written.safetensors is produced by the Swift test
`WriterTests.swiftWrittenFixtureIsStable` (NEGCLIP_REGEN_FIXTURES=1 regenerates it); that test also
asserts the writer still produces these exact bytes. Here Python's `safetensors` must read it and
find the values the Swift side wrote (same formula as Tests/SafeTensorsTests/Helpers.swift).
"""
import os

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "safetensors")
SWIFT_WRITTEN = os.path.join(FIXTURES, "swift-written.safetensors")


def formula(n):
    i = np.arange(n, dtype=np.int64)
    return (((i * 37) % 101) - 50).astype(np.float32) / np.float32(64)


def expected():
    return {
        "text_model.embeddings.token_embedding.weight": formula(30).reshape(6, 5),
        "text_model.final_layer_norm.bias": formula(5),
        "logit_scale": formula(1).reshape(()),
        "empty": formula(0).reshape(3, 0),
        "half.weight": formula(7).reshape(7, 1).astype(np.float16),
        "position_ids": np.arange(9, dtype=np.int64).reshape(1, 9),
        "weird \"name\"\n\u0001\u00e9/": np.array([1.5, -2.25], dtype=np.float32),
        "text_model.encoder.layers.0.mlp.fc1.weight": formula(12).reshape(3, 4),
    }


def test_python_reads_swift_written_file():
    got = load_file(SWIFT_WRITTEN)
    want = expected()
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)


def test_metadata_survives():
    with safe_open(SWIFT_WRITTEN, framework="np") as f:
        assert f.metadata() == {"format": "pt"}


def test_python_writes_identical_bytes():
    """Byte-for-byte equality with the reference writer: same ordering, JSON and padding."""
    with open(SWIFT_WRITTEN, "rb") as fh:
        ours = fh.read()
    assert save(expected(), metadata={"format": "pt"}) == ours
