"""A checkpoint written by `negclip pretrain` is a transformers CLIPModel folder.

Pretrains a tiny CLIP (both towers, from scratch) for 3 steps on a tiny synthetic world
(`negclip make-world --size 24`), loads RUN_DIR/checkpoint-3 with `CLIPModel.from_pretrained`,
`CLIPTokenizer` and `CLIPImageProcessor` (no missing or unexpected keys), and checks that its text
and image embeddings equal `negclip encode`'s on the same folder and world images (atol 1e-5), and
that pretraining moved both towers away from the untrained network (RUN_DIR/init). The binary is
.build/debug/negclip, or $NEGCLIP_SCRATCH_PATH/debug/negclip when the build used another scratch path.
"""
import glob
import json
import os
import subprocess

import pytest
from negclip_cli import negclip_binary

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch", reason="SKIPPED: torch not installed; pretrained-checkpoint interop not checked")
transformers = pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; pretrained-checkpoint interop not checked")
Image = pytest.importorskip("PIL.Image", reason="SKIPPED: Pillow not installed; pretrained-checkpoint interop not checked")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CAPTIONS = ["a red circle", "no blue square", "a green triangle but no red circle", "there is a white ring"]
CONFIG = {"text_width": 32, "text_layers": 3, "text_heads": 4, "vision_width": 24, "vision_layers": 2, "vision_heads": 2,
          "patch_size": 8, "image_size": 32, "projection_dim": 16, "batch": 6, "lr": 0.01, "warmup": 1, "steps": 3, "seed": 5}


def run(*args):
    r = subprocess.run([negclip_binary(), *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"negclip {' '.join(args)} failed:\n{r.stderr}"
    return r


def encode(model_dir, images):
    args = ["encode", "--model", model_dir]
    for c in CAPTIONS:
        args += ["--text", c]
    for f in images:
        args += ["--image", f]
    out = json.loads(run(*args).stdout)
    return (np.array([t["embedding"] for t in out["texts"]], dtype=np.float64),
            np.array([t["embedding"] for t in out["images"]], dtype=np.float64))


def test_pretrained_checkpoint_loads_in_transformers(tmp_path):
    world = tmp_path / "world"
    run("make-world", "--size", "24", "--image-size", "32", "--out", str(world))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(CONFIG))
    run_dir = tmp_path / "run"
    run("pretrain", "--world", str(world), "--out", str(run_dir), "--config", str(config))
    ckpt = run_dir / "checkpoint-3"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3

    model, info = transformers.CLIPModel.from_pretrained(str(ckpt), output_loading_info=True)
    model.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(k), f"{k}: {info[k]}"
    tok = transformers.CLIPTokenizer.from_pretrained(str(ckpt))
    proc = transformers.CLIPImageProcessor.from_pretrained(str(ckpt))
    images = sorted(glob.glob(str(world / "images" / "train" / "*.png")))[:4]
    with torch.no_grad():
        batch = tok(CAPTIONS, padding=True, return_tensors="pt")
        t = model.get_text_features(**batch)
        t = getattr(t, "pooler_output", t)   # transformers 5 may return an output object
        pixels = proc([Image.open(f).convert("RGB") for f in images], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape) == (4, 3, 32, 32)
        v = model.get_image_features(pixel_values=pixels)
        v = getattr(v, "pooler_output", v)
    want_t = torch.nn.functional.normalize(t, dim=-1).double().numpy()
    want_v = torch.nn.functional.normalize(v, dim=-1).double().numpy()
    got_t, got_v = encode(str(ckpt), images)
    assert got_t.shape == want_t.shape and got_v.shape == want_v.shape
    dt, dv = np.abs(got_t - want_t).max(), np.abs(got_v - want_v).max()
    assert dt <= 1e-5, f"negclip encode vs transformers, text embeddings: max|diff| = {dt:.3g}"
    assert dv <= 1e-5, f"negclip encode vs transformers, image embeddings: max|diff| = {dv:.3g}"
    # pretraining moved both towers away from the untrained network
    base_t, base_v = encode(str(run_dir / "init"), images)
    assert np.abs(base_t - got_t).max() > 1e-3
    assert np.abs(base_v - got_v).max() > 1e-3


def test_builtin_model_loads_in_transformers(tmp_path):
    """The committed built-in model (models/negclip-mini) loads in transformers' CLIPModel with no
    missing or unexpected keys and gives `negclip encode`'s text and image embeddings (atol 1e-5) on
    world images of its own size, rendered by a small world of the same generator."""
    mini = os.path.join(ROOT, "models", "negclip-mini")
    world = tmp_path / "world"
    run("make-world", "--size", "24", "--image-size", "64", "--out", str(world))
    model, info = transformers.CLIPModel.from_pretrained(mini, output_loading_info=True)
    model.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(k), f"{k}: {info[k]}"
    assert model.config.text_config.num_hidden_layers == 12
    tok = transformers.CLIPTokenizer.from_pretrained(mini)
    proc = transformers.CLIPImageProcessor.from_pretrained(mini)
    images = sorted(glob.glob(str(world / "images" / "train" / "*.png")))[:4]
    with torch.no_grad():
        batch = tok(CAPTIONS, padding=True, return_tensors="pt")
        t = model.get_text_features(**batch)
        t = getattr(t, "pooler_output", t)
        pixels = proc([Image.open(f).convert("RGB") for f in images], return_tensors="pt")["pixel_values"]
        v = model.get_image_features(pixel_values=pixels)
        v = getattr(v, "pooler_output", v)
    want_t = torch.nn.functional.normalize(t, dim=-1).double().numpy()
    want_v = torch.nn.functional.normalize(v, dim=-1).double().numpy()
    got_t, got_v = encode(mini, images)
    dt, dv = np.abs(got_t - want_t).max(), np.abs(got_v - want_v).max()
    assert dt <= 1e-5, f"built-in model, negclip encode vs transformers, text embeddings: max|diff| = {dt:.3g}"
    assert dv <= 1e-5, f"built-in model, negclip encode vs transformers, image embeddings: max|diff| = {dv:.3g}"
