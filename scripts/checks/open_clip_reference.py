"""The open_clip side of scripts/checks/test_open_clip_parity.py, run in its own process.

open_clip imports torchvision, and transformers switches its image processors to torchvision when it is
importable; PyPI's torchvision wheel cannot load its compiled operators beside the CPU torch wheel. So
open_clip and torchvision are installed outside the venv's site-packages (scripts/ci/python_checks.sh:
`pip install --no-deps --target $VENV/open-clip-site`), and only this process sees them (PYTHONPATH),
after open_clip_fixture.py has declared the two torchvision operators (no torchvision operator runs;
torchvision's PIL transforms do).

usage: python open_clip_reference.py SPEC.json
SPEC: {"config": "TINY" | "TINY_QUICK", "vocab_size": int, "seed": int, "folder": DIR,
       "bin_folder": DIR or null, "captions": [...], "images": [paths], "out": FILE.npz}
Builds a fresh random model with open_clip's own `CLIP(**cfg)` (open_clip_fixture.random_clip; cfg =
open_clip_fixture's config of that name with text_cfg.vocab_size = vocab_size, 49408 for the OpenAI
vocabulary), saves
it as open_clip does into DIR (open_clip_config.json + open_clip_model.safetensors) with the OpenAI
vocabulary file open_clip ships (bpe_simple_vocab_16e6.txt.gz), and, when bin_folder is given, the same
weights as a pickled open_clip_pytorch_model.bin (torch.save of the state dict) beside the same config and
vocabulary. Then writes open_clip's outputs to OUT:
  captions [N]               open_clip_fixture.CAPTIONS (the non-blank ones), then SPEC's captions
  input_ids [N, context]     open_clip's SimpleTokenizer (padded with 0)
  lengths [N]                tokens through end-of-text (argmax + 1)
  hidden_states [L+1, N, context, width]  l = 0: input of transformer.resblocks[0] (token + positional
                             embedding); l = k + 1: output of resblocks[k] (forward hooks, padded batch)
  pooled [N, width]          ln_final at the end-of-text row;  embeds [N, embed_dim]: encode_text
  pixel_values, image_embeds the image files through open_clip's image_transform, then encode_image
"""
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
import open_clip_fixture  # noqa: E402  (declares the torchvision operators, imports open_clip)
from open_clip_fixture import PREPROCESS, hooked, open_clip, random_clip, save_open_clip_folder  # noqa: E402
from PIL import Image  # noqa: E402

GZ = os.path.join(ROOT, "Tests", "Fixtures", "openai-vocab", "bpe_simple_vocab_16e6.txt.gz")


def main(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    cfg = copy.deepcopy(getattr(open_clip_fixture, spec["config"]))
    cfg["text_cfg"]["vocab_size"] = spec["vocab_size"]
    captions = [c for c in open_clip_fixture.CAPTIONS if c.strip()] + spec["captions"]
    model = random_clip(cfg, spec["seed"])
    save_open_clip_folder(model, cfg, spec["folder"])
    shutil.copy(GZ, os.path.join(spec["folder"], "bpe_simple_vocab_16e6.txt.gz"))
    if spec.get("bin_folder"):
        os.makedirs(spec["bin_folder"], exist_ok=True)
        torch.save(model.state_dict(), os.path.join(spec["bin_folder"], "open_clip_pytorch_model.bin"))
        for name in ["open_clip_config.json", "bpe_simple_vocab_16e6.txt.gz"]:
            shutil.copy(os.path.join(spec["folder"], name), os.path.join(spec["bin_folder"], name))
    # Read back through open_clip's own loader, as a user would.
    model = open_clip.CLIP(**cfg).eval()
    open_clip.load_checkpoint(model, os.path.join(spec["folder"], "open_clip_model.safetensors"))

    n = cfg["text_cfg"]["context_length"]
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=n)
    out = {}
    with torch.no_grad():
        ids = tok(captions)
        emb, states = hooked(model.transformer.resblocks, lambda: model.encode_text(ids))
        assert len(states) == cfg["text_cfg"]["layers"] + 1
        eos = ids.argmax(dim=-1)
        out["input_ids"] = ids.numpy()
        out["lengths"] = (eos + 1).numpy()
        out["hidden_states"] = torch.stack(states).numpy()
        out["pooled"] = model.ln_final(states[-1])[torch.arange(len(ids)), eos].numpy()
        out["embeds"] = emb.numpy()
        s = cfg["vision_cfg"]["image_size"]
        pre = open_clip.image_transform(s, is_train=False, mean=PREPROCESS["mean"], std=PREPROCESS["std"])
        pix = torch.stack([pre(Image.open(p)) for p in spec["images"]])
        out["pixel_values"] = pix.numpy()
        out["image_embeds"] = model.encode_image(pix).numpy()
    meta = {"torch": torch.__version__, "open_clip": open_clip.__version__}
    np.savez(spec["out"], meta=json.dumps(meta), captions=np.array(captions), **out)


if __name__ == "__main__":
    main(sys.argv[1])
