"""Full-size parity check (not in CI: minutes and ~1.2 GB of disk): a random ViT-B/32-shaped CLIP built by
transformers, saved as safetensors (fp32, then fp16), with the real OpenAI vocabulary; negclip and
transformers encode the same 256 captions and 32 image files; prints, per hidden state of both towers,

    rel = max |negclip - transformers| / max |transformers|

and fails unless rel <= 1e-4 for every layer, in fp32 and from the fp16 checkpoint (computed in fp32).

    python scripts/peers/parity_check.py --shape vit-b-32 [--work /tmp/negclip-parity] [--keep]
Needs: torch, transformers, pillow, safetensors (scripts/fixtures/requirements.txt) and a release build
(`swift build -c release --product negclip-bench`).
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file
from transformers import CLIPModel, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
sys.path.insert(0, HERE)
from tokenizer import openai_merges, write_hf_folder  # noqa: E402
from torch_peer import SHAPES  # noqa: E402

WORDS = ("a an the no not without never dog cat red blue green sofa table photo of on in under two three "
         "man woman riding horse hat wearing there is are nothing but with small large striped wooden car "
         "street picture people bowl fruit apples isn't aren't doesn't empty").split()


def captions(rng, n):
    out = []
    for i in range(n):
        k = int(np.clip(rng.lognormal(np.log(9), 0.5), 2, 70))
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), size=k)]
        s = " ".join(words)
        if i % 7 == 0:
            s = s.capitalize() + "!"
        if i % 11 == 0:
            s += " 42,5 émigré 🐶"
        out.append(s)
    return out


def images(rng, folder, n):
    paths = []
    for i in range(n):
        h, w = int(rng.integers(160, 400)), int(rng.integers(160, 400))
        a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        # smooth structure + noise, so resampling matters
        yy, xx = np.mgrid[0:h, 0:w]
        a = ((a.astype(np.int32) // 4 + (np.sin(xx / 9.0)[..., None] * 80 + yy[..., None] % 96)) % 256).astype(np.uint8)
        p = os.path.join(folder, f"img{i:02d}." + ("png" if i % 2 == 0 else "jpg"))
        Image.fromarray(a).save(p, quality=90) if p.endswith("jpg") else Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def reference(model_dir, caps, paths):
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    tok = CLIPTokenizer.from_pretrained(model_dir)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    out = {}
    with torch.inference_mode():
        ids = [tok(c, truncation=True, max_length=77)["input_ids"] for c in caps]
        hs = {}
        for s in ids:   # one at a time: no padding, exact rows
            o = model.text_model(input_ids=torch.tensor([s]), output_hidden_states=True)
            for l, h in enumerate(o.hidden_states):
                hs.setdefault(l, []).append(h[0].numpy())
        for l, v in hs.items():
            out[f"text.hidden_states.{l}"] = np.concatenate(v)
        out["text.input_ids"] = np.concatenate([np.array(s, dtype=np.float32) for s in ids])
        pix = proc(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
        o = model.vision_model(pixel_values=pix, output_hidden_states=True)
        for l, h in enumerate(o.hidden_states):
            out[f"vision.hidden_states.{l}"] = h.numpy()
        out["vision.pixel_values"] = pix.numpy()
    return out


def compare(ours, ref, label):
    worst = 0.0
    ok = True
    for k in sorted(ref, key=lambda s: (s.split(".")[0], s.count("."), int(s.rsplit(".", 1)[-1]) if s[-1].isdigit() else 0)):
        a, b = ours[k].reshape(-1), ref[k].reshape(-1).astype(np.float32)
        if a.shape != b.shape:
            print(f"{label} {k}: SHAPE MISMATCH ours {ours[k].shape} transformers {ref[k].shape}")
            ok = False
            continue
        if k == "text.input_ids":
            same = np.array_equal(a, b)
            print(f"{label} {k}: {'identical' if same else 'DIFFERENT'}")
            ok &= same
            continue
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
        worst = max(worst, rel) if "hidden_states" in k else worst
        flag = "OK" if rel <= 1e-4 else "FAIL"
        print(f"{label} {k:28s} max rel diff {rel:.3e}  {flag}")
        ok &= rel <= 1e-4 or "pixel_values" in k and rel <= 1e-5
    print(f"{label}: worst hidden-state rel diff {worst:.3e}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="vit-b-32", choices=sorted(SHAPES))
    p.add_argument("--work", default="/tmp/negclip-parity")
    p.add_argument("--captions", type=int, default=256)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    os.makedirs(args.work, exist_ok=True)
    bench = os.path.join(ROOT, ".build", "release", "negclip-bench")
    if not os.path.exists(bench):
        subprocess.run(["swift", "build", "-c", "release", "--product", "negclip-bench"], cwd=ROOT, check=True)
    caps = captions(rng, args.captions)
    cap_file = os.path.join(args.work, "captions.txt")
    with open(cap_file, "w") as f:
        f.write("\n".join(caps) + "\n")
    img_dir = os.path.join(args.work, "images")
    os.makedirs(img_dir, exist_ok=True)
    paths = images(rng, img_dir, args.images)
    s = SHAPES[args.shape]
    from transformers import CLIPConfig
    cfg = CLIPConfig(text_config=s["text"], vision_config=s["vision"], projection_dim=s["projection_dim"])
    base = CLIPModel(cfg)
    all_ok = True
    for dtype in ["float32", "float16"]:
        mdir = os.path.join(args.work, f"model-{dtype}")
        (base if dtype == "float32" else base.half()).save_pretrained(mdir)
        write_hf_folder(mdir, openai_merges())
        out_file = os.path.join(args.work, f"negclip-{dtype}.safetensors")
        subprocess.run([bench, "parity-dump", "--model", mdir, "--captions", cap_file, "--images", *paths,
                        "--out", out_file], check=True)
        all_ok &= compare(load_file(out_file), reference(mdir, caps, paths), f"[{args.shape} {dtype}]")
    if not args.keep:
        shutil.rmtree(args.work)
    print("PARITY OK" if all_ok else "PARITY FAILED")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
