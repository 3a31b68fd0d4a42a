"""A checkpoint written by `negclip train` is a transformers CLIPModel folder.

Trains 3 steps on a tiny synthetic world (`negclip make-world --size 12`) from
Tests/Fixtures/tiny-clip, loads RUN_DIR/checkpoint-3 with `CLIPModel.from_pretrained`, and checks
that its text embeddings equal `negclip encode`'s on the same folder (atol 1e-5), and that training
moved them away from the base model's. The second check scores presence and absence accuracy (the
protocol of `negclip evaluate`, docs/data.md "Metrics") of a fine-tuned checkpoint in transformers on
a subset of a world's test split and requires `negclip evaluate`'s numbers within 0.5 points. The binary is .build/debug/negclip, or
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


def pair_score(right, wrong, tol=1e-6):
    """Metrics.pairScore: 1 if right > wrong, 0.5 on a tie within tol, else 0."""
    return 0.5 if abs(right - wrong) <= tol else (1.0 if right > wrong else 0.0)


def test_trained_checkpoint_presence_absence_match_transformers(tmp_path):
    from PIL import Image

    world = tmp_path / "world"
    run("make-world", "--size", "300", "--image-size", "32", "--seed", "3", "--out", str(world))
    run_dir = tmp_path / "run"
    run("train", "--model", TINY, "--data", str(world / "captions.jsonl"), "--out", str(run_dir),
        "--steps", "4", "--batch", "8", "--lr", "1e-2", "--warmup", "1", "--trainable", "0-1", "--seed", "1")
    ckpt = str(run_dir / "checkpoint-4")
    # the subset: the first 24 test caption records with both a presence and an absence item,
    # written beside captions.jsonl so their relative image paths resolve the same way
    records = [json.loads(l) for l in (world / "captions.jsonl").read_text().splitlines() if l.strip()]
    subset = [r for r in records if r.get("split") == "test" and r.get("presence_negated")
              and r.get("absence_negated") and r.get("absence_contrast_image")][:24]
    assert len(subset) == 24, f"the world has only {len(subset)} complete test caption records"
    (world / "subset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in subset))
    out_json = tmp_path / "eval.json"
    run("evaluate", "--model", ckpt, "--data", str(world / "subset.jsonl"), "--json", str(out_json), "--bootstrap", "0")
    ours = json.loads(out_json.read_text())["reports"][0]["metrics"]

    model = transformers.CLIPModel.from_pretrained(ckpt).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(ckpt)
    proc = transformers.CLIPImageProcessor.from_pretrained(ckpt)

    def unit(x):
        x = getattr(x, "pooler_output", x)
        return torch.nn.functional.normalize(x, dim=-1).double().numpy()

    def texts(ts):
        with torch.no_grad():
            return unit(model.get_text_features(**tok(ts, padding=True, return_tensors="pt")))

    def images(paths):
        pics = [Image.open(world / p).convert("RGB") for p in paths]
        with torch.no_grad():
            return unit(model.get_image_features(**proc(images=pics, return_tensors="pt")))

    cap, neg, absn = texts([r["caption"] for r in subset]), texts([r["presence_negated"] for r in subset]), \
        texts([r["absence_negated"] for r in subset])
    img, contrast = images([r["image"] for r in subset]), images([r["absence_contrast_image"] for r in subset])
    presence = np.mean([pair_score((cap[i] * img[i]).sum(), (neg[i] * img[i]).sum()) for i in range(len(subset))])
    absence = np.mean([pair_score((absn[i] * img[i]).sum(), (absn[i] * contrast[i]).sum()) for i in range(len(subset))])
    print(f"presence negclip {ours['presence']['mean']:.4f} transformers {presence:.4f}; absence negclip {ours['absence']['mean']:.4f} transformers {absence:.4f}")
    assert ours["presence"]["n"] == len(subset) and ours["absence"]["n"] == len(subset)
    assert abs(ours["presence"]["mean"] - presence) <= 0.005, f"presence: negclip {ours['presence']['mean']:.4f}, transformers {presence:.4f}"
    assert abs(ours["absence"]["mean"] - absence) <= 0.005, f"absence: negclip {ours['absence']['mean']:.4f}, transformers {absence:.4f}"
