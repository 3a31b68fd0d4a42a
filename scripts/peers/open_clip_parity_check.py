"""Full-size parity with open_clip (not in CI: needs open_clip_torch, ~600 MB of disk, a minute or two): a
random model of a real open_clip architecture (`open_clip.create_model(NAME, pretrained=None)`, LayerNorm
affines and biases perturbed so a kernel that ignores them fails) saved as an open_clip folder with the
OpenAI vocabulary file; negclip (`negclip-bench parity-dump`) and open_clip encode the same captions and
image files. Prints, per hidden state of both towers (text: rows up to end-of-text, read with forward
hooks on `transformer.resblocks`),

    rel = max |negclip - open_clip| / max |open_clip|

and fails unless the token ids are identical and rel <= 1e-4 for every layer and embedding.

    python scripts/peers/open_clip_parity_check.py [--model-name ViT-B-32] [--captions 128] [--images 8]
Needs: open_clip_torch 3.3.0 (see scripts/fixtures/open_clip_fixture.py for the install and the
torchvision operator stub) and negclip-bench (`swift build --product negclip-bench`; the newer of the
release and debug builds is used).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
sys.path.insert(0, HERE)
from open_clip_fixture import hooked, open_clip  # noqa: E402  (declares the torchvision operator stub)
from parity_check import captions, images  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

GZ = os.path.join(ROOT, "Tests", "Fixtures", "openai-vocab", "bpe_simple_vocab_16e6.txt.gz")


def make_folder(name, folder):
    model = open_clip.create_model(name, pretrained=None).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("bias") or ".ln_" in k or k.startswith("ln_") or "ln_final" in k:
                p.add_(0.1 * torch.randn_like(p))
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "open_clip_model.safetensors"))
    cfg = {"model_cfg": open_clip.get_model_config(name),
           "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    shutil.copy(GZ, os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"))
    return model


def reference(model, name, caps, paths):
    tok = open_clip.get_tokenizer(name)
    _, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    out = {}
    with torch.inference_mode():
        ids = tok(caps)
        lengths = [int(r.argmax()) + 1 for r in ids]
        hs, pooled, embeds = {}, [], []
        for i in range(0, len(caps), 32):
            batch = ids[i:i + 32]
            emb, states = hooked(model.transformer.resblocks, lambda: model.encode_text(batch))
            x = model.ln_final(states[-1])
            for j, n in enumerate(lengths[i:i + 32]):
                for l, h in enumerate(states):
                    hs.setdefault(l, []).append(h[j, :n].numpy())
                pooled.append(x[j, n - 1].numpy())
            embeds.append(emb.numpy())
        for l, v in hs.items():
            out[f"text.hidden_states.{l}"] = np.concatenate(v)
        out["text.input_ids"] = np.concatenate([ids[j, :n].numpy().astype(np.float32) for j, n in enumerate(lengths)])
        out["text.pooled"] = np.stack(pooled)
        out["text.embeds"] = np.concatenate(embeds)
        pix = torch.stack([preprocess(Image.open(p)) for p in paths])
        emb, states = hooked(model.visual.transformer.resblocks, lambda: model.encode_image(pix))
        for l, h in enumerate(states):
            out[f"vision.hidden_states.{l}"] = h.numpy()
        out["vision.pixel_values"] = pix.numpy()
        out["vision.embeds"] = emb.numpy()
    return out


def compare(ours, ref, label):
    ok, worst = True, 0.0
    def order(s):
        tail = s.rsplit(".", 1)[-1]
        return (s.split(".")[0], s.count("."), int(tail) if tail.isdigit() else 0, s)
    for k in sorted(ref, key=order):
        a, b = ours[k].reshape(-1), ref[k].reshape(-1).astype(np.float32)
        if a.shape != b.shape:
            print(f"{label} {k}: SHAPE MISMATCH negclip {ours[k].shape} open_clip {ref[k].shape}")
            ok = False
            continue
        if k == "text.input_ids":
            same = np.array_equal(a, b)
            print(f"{label} {k}: {'identical' if same else 'DIFFERENT'}")
            ok &= same
            continue
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
        worst = max(worst, rel)
        print(f"{label} {k:28s} max rel diff {rel:.3e}  {'OK' if rel <= 1e-4 else 'FAIL'}")
        ok &= rel <= 1e-4
    print(f"{label}: worst rel diff {worst:.3e}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-name", default="ViT-B-32")
    p.add_argument("--work", default="/tmp/negclip-open-clip-parity")
    p.add_argument("--captions", type=int, default=128)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    os.makedirs(args.work, exist_ok=True)
    built = [b for b in [os.path.join(ROOT, ".build", c, "negclip-bench") for c in ("release", "debug")]
             if os.path.exists(b)]
    bench = max(built, key=os.path.getmtime) if built else None   # the newer build
    if bench is None:
        sys.exit("no negclip-bench build: swift build --product negclip-bench")
    caps = captions(rng, args.captions)
    cap_file = os.path.join(args.work, "captions.txt")
    with open(cap_file, "w") as f:
        f.write("\n".join(caps) + "\n")
    img_dir = os.path.join(args.work, "images")
    os.makedirs(img_dir, exist_ok=True)
    paths = images(rng, img_dir, args.images)
    mdir = os.path.join(args.work, "model")
    model = make_folder(args.model_name, mdir)
    out_file = os.path.join(args.work, "negclip.safetensors")
    subprocess.run([bench, "parity-dump", "--model", mdir, "--captions", cap_file, "--images", *paths,
                    "--out", out_file], check=True)
    label = f"[open_clip {open_clip.__version__} {args.model_name} float32]"
    ok = compare(load_file(out_file), reference(model, args.model_name, caps, paths), label)
    if not args.keep:
        shutil.rmtree(args.work)
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
