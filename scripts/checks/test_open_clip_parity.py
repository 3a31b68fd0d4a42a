"""open_clip folders: `negclip dump --model DIR` against the real open_clip (open_clip_torch 3.3.0), live.

Each test builds a FRESH random model with open_clip's own code (scripts/fixtures/open_clip_fixture.py
`random_clip`: the fixture's two small configs, GELU and quick_gelu with odd widths, with the OpenAI
vocabulary so open_clip's SimpleTokenizer is the reference tokenizer), saves it as open_clip does
(open_clip_config.json + open_clip_model.safetensors + bpe_simple_vocab_16e6.txt.gz) and compares

    negclip dump --model DIR --tokens all --images --alpha drop

with open_clip on captions of the peer fixtures and scripts/fixtures/open_clip_fixture.py's CAPTIONS:
token ids and lengths (identical), every token row of every layer (hidden_states[l], l = 0: token +
positional embedding, l = k + 1: output of transformer.resblocks[k]; forward hooks on open_clip's padded
batch), the end-of-text rows (/text/hidden_states), /text/pooled (ln_final), /text/embeds (encode_text),
and /image/embeds against encode_image on image files of Tests/Fixtures/images/src through open_clip's
own preprocessing (torchvision's PIL transforms: bicubic resize of the shortest edge, CenterCrop,
Normalize). The GELU model is also saved as a pickled open_clip_pytorch_model.bin, converted with
scripts/converters/open_clip_bin_to_safetensors.py, and dumped: the same numbers.
Tolerance: max |negclip - open_clip| <= 1e-5 absolute on every compared tensor (as test_bert_parity.py).
Prints `layer l max|diff| ...` lines.

open_clip runs in a subprocess (scripts/checks/open_clip_reference.py) that sees open_clip and torchvision
from $NEGCLIP_OPEN_CLIP_SITE (default: open-clip-site inside the venv, where scripts/ci/python_checks.sh
installs them with --no-deps --target): with torchvision importable in this process transformers' image
processors would switch to it and the other checks would fail. Without that folder the check skips with a
loud SKIPPED line, which CI (NEGCLIP_REQUIRE_PYTHON_CHECKS=1) counts as a failure.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from negclip_cli import ROOT, negclip_binary

torch = pytest.importorskip("torch")   # for the open_clip process and the converter, not used here
h5py = pytest.importorskip("h5py")

ATOL = 1e-5
SITE = os.environ.get("NEGCLIP_OPEN_CLIP_SITE", os.path.join(sys.prefix, "open-clip-site"))
REFERENCE = os.path.join(ROOT, "scripts", "checks", "open_clip_reference.py")
CONVERTER = os.path.join(ROOT, "scripts", "converters", "open_clip_bin_to_safetensors.py")
IMAGES = ["rgb64.png", "q85_420_131x97.jpg", "rgb97x131.png", "q90_444_200x150.jpg", "grey80x60.png"]
OPENAI_VOCAB = 49408


def peer_captions():
    """The peer-fixture captions of Tests/Fixtures/bert/tokenizer-ids.json (the reference process puts
    open_clip_fixture.py's CAPTIONS before them)."""
    with open(os.path.join(ROOT, "Tests", "Fixtures", "bert", "tokenizer-ids.json"), encoding="utf-8") as f:
        return [i["text"] for i in json.load(f)["items"] if i["source"] != "edge" and not i["source"].startswith("world/")]


def open_clip_reference(config, seed, folder, bin_folder, tmp_path):
    if not os.path.isdir(os.path.join(SITE, "open_clip")):
        line = (f"SKIPPED: open_clip not installed in {SITE} (scripts/ci/python_checks.sh installs "
                f"open_clip_torch==3.3.0 torchvision==0.28.0 ftfy wcwidth there with pip --no-deps --target)")
        print("=" * 20 + " " + line + " " + "=" * 20)
        pytest.skip(line)
    spec = {"config": config, "vocab_size": OPENAI_VOCAB, "seed": seed, "folder": str(folder), "bin_folder": bin_folder and str(bin_folder),
            "captions": peer_captions(), "images": [os.path.join(ROOT, "Tests", "Fixtures", "images", "src", i) for i in IMAGES],
            "out": str(tmp_path / "reference.npz")}
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    path = os.pathsep.join([SITE] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, REFERENCE, str(tmp_path / "spec.json")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=path))
    assert r.returncode == 0, f"open_clip_reference.py failed:\n{r.stderr[-3000:]}"
    ref = np.load(spec["out"])
    print(f"reference: {json.loads(str(ref['meta']))}")
    assert len(ref["lengths"]) == len(ref["captions"]) > 80
    return ref


def dump(folder, caps, tmp_path, name):
    data = tmp_path / f"{name}.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i, c in enumerate(caps):
            img = os.path.join(ROOT, "Tests", "Fixtures", "images", "src", IMAGES[i % len(IMAGES)])
            f.write(json.dumps({"caption": c, "id": str(i), "image": img}) + "\n")
    out = tmp_path / f"{name}.h5"
    r = subprocess.run([negclip_binary(), "dump", "--model", str(folder), "--data", str(data), "--out", str(out),
                        "--tokens", "all", "--images", "--alpha", "drop", "--batch", "16"], capture_output=True, text=True)
    assert r.returncode == 0, f"negclip dump failed: {r.stderr[-2000:]}"
    return h5py.File(out, "r")


def compare(f, ref, name):
    """Every compared tensor's max|diff| (asserts on ids and shapes first)."""
    lengths = ref["lengths"]
    assert list(f["/text/lengths"][:]) == list(lengths), f"{name}: lengths differ"
    ids = f["/text/input_ids"][:]
    for i, n in enumerate(lengths):
        assert list(ids[i, :n]) == list(ref["input_ids"][i, :n]), f"{name}: token ids of item {i} differ"
    hs = ref["hidden_states"]                              # [layer, item, context, width]
    tok = f["/text/token_states"][:]                        # [layer, item, token, width], zero past lengths
    rows = f["/text/hidden_states"][:]                      # [layer, item, width] at end-of-text
    assert tok.shape[0] == hs.shape[0] == rows.shape[0], f"{name}: {tok.shape[0]} layers, open_clip {hs.shape[0]}"
    diffs = {}
    for l in range(hs.shape[0]):
        d_tok = max(float(np.abs(tok[l, i, :n] - hs[l, i, :n]).max()) for i, n in enumerate(lengths))
        d_eos = float(np.abs(rows[l] - hs[l, np.arange(len(lengths)), lengths - 1]).max())
        print(f"{name}: layer {l} max|diff| every token row {d_tok:.3g}, end-of-text row {d_eos:.3g}")
        diffs[f"layer {l} tokens"], diffs[f"layer {l} eos"] = d_tok, d_eos
    for key, ours in [("pooled", "/text/pooled"), ("embeds", "/text/embeds")]:
        diffs[key] = float(np.abs(f[ours][:] - ref[key]).max())
    image_ids = [s.decode() if isinstance(s, bytes) else s for s in f["/image/ids"][:]]
    order = [IMAGES.index(os.path.basename(p)) for p in image_ids]
    assert sorted(order) == list(range(len(IMAGES))), image_ids
    diffs["image_embeds"] = float(np.abs(f["/image/embeds"][:] - ref["image_embeds"][order]).max())
    print(f"{name}: pooled {diffs['pooled']:.3g}, text embeds {diffs['embeds']:.3g}, "
          f"image embeds {diffs['image_embeds']:.3g} (max|diff|; {len(lengths)} captions, {len(IMAGES)} images)")
    return diffs


def check(diffs, name):
    bad = {k: v for k, v in diffs.items() if not v <= ATOL}
    assert not bad, f"{name}: max|diff| above {ATOL}: {bad}"


@pytest.mark.parametrize("config,seed", [("TINY", 21), ("TINY_QUICK", 22)])
def test_open_clip_every_layer(tmp_path, config, seed):
    negclip_binary()   # skips (a failure under CI) before open_clip runs when the binary is not built
    folder, bin_folder = tmp_path / "model", tmp_path / "model-bin"
    ref = open_clip_reference(config, seed, folder, bin_folder if config == "TINY" else None, tmp_path)
    caps = [str(c) for c in ref["captions"]]
    with open(folder / "open_clip_config.json", encoding="utf-8") as f:
        name = f"open_clip {config} (quick_gelu {json.load(f)['model_cfg']['quick_gelu']})"
    with dump(folder, caps, tmp_path, "safetensors") as f:
        check(compare(f, ref, name), name)
    if config == "TINY":
        # The pickled .bin through the converter: the same weights, so the same numbers.
        r = subprocess.run([sys.executable, CONVERTER, str(bin_folder)], capture_output=True, text=True)
        assert r.returncode == 0, f"converter failed: {r.stderr[-2000:]}"
        with dump(bin_folder, caps, tmp_path, "bin") as f:
            check(compare(f, ref, name + " from .bin"), name + " from .bin")
