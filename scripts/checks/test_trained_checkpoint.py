"""A checkpoint written by `negclip train` is a transformers CLIPModel folder.

Trains 3 steps on a tiny synthetic world (`negclip make-world --size 12`) from
Tests/Fixtures/tiny-clip, loads RUN_DIR/checkpoint-3 with `CLIPModel.from_pretrained`, and checks
that its text embeddings equal `negclip encode`'s on the same folder (atol 1e-5), and that training
moved them away from the base model's. The binary is .build/debug/negclip, or
$NEGCLIP_SCRATCH_PATH/debug/negclip when the build used another scratch path.
"""
import json
import os
import subprocess

import pytest
from negclip_cli import negclip_binary

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch", reason="SKIPPED: torch not installed; trained-checkpoint interop not checked")
transformers = pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; trained-checkpoint interop not checked")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "Tests", "Fixtures", "tiny-clip")
CAPTIONS = ["a red circle", "no blue square", "a green triangle but no red circle"]


def run(*args):
    r = subprocess.run([negclip_binary(), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"negclip {' '.join(args)} failed:\n{r.stderr}"
    return r


def encode(model_dir):
    args = ["encode", "--model", model_dir]
    for c in CAPTIONS:
        args += ["--text", c]
    out = json.loads(run(*args).stdout)
    return np.array([t["embedding"] for t in out["texts"]], dtype=np.float64)


def test_trained_checkpoint_loads_in_transformers(tmp_path):
    world = tmp_path / "world"
    run("make-world", "--size", "12", "--image-size", "32", "--out", str(world))
    run_dir = tmp_path / "run"
    run("train", "--model", TINY, "--data", str(world / "captions.jsonl"), "--out", str(run_dir),
        "--steps", "3", "--batch", "4", "--lr", "1e-2", "--warmup", "1", "--trainable", "whole")
    ckpt = run_dir / "checkpoint-3"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3
    assert "block.0" in state["trainable_groups"]

    model = transformers.CLIPModel.from_pretrained(str(ckpt)).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(str(ckpt))
    with torch.no_grad():
        batch = tok(CAPTIONS, padding=True, return_tensors="pt")
        feats = model.get_text_features(**batch)
        feats = getattr(feats, "pooler_output", feats)   # transformers 5 may return an output object
        want = torch.nn.functional.normalize(feats, dim=-1).double().numpy()
    got = encode(str(ckpt))
    assert got.shape == want.shape
    diff = np.abs(got - want).max()
    assert diff <= 1e-5, f"negclip encode vs transformers on the trained checkpoint: max|diff| = {diff:.3g}"
    # the run really trained: embeddings moved away from the base model's
    base = encode(TINY)
    assert np.abs(base - got).max() > 1e-4
