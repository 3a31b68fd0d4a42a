"""The PyTorch peer of `negclip-bench`: the same shapes through transformers, for side-by-side ratios.

    python scripts/peers/torch_peer.py make-checkpoint --shape vit-b-32 --out /tmp/vitb32
    python scripts/peers/torch_peer.py encode-text --model /tmp/vitb32 --ids /tmp/ids.json --batch 32 --padding longest
    python scripts/peers/torch_peer.py encode-text --model /tmp/vitb32 --ids /tmp/ids.json --batch 32 --padding max_length
    python scripts/peers/torch_peer.py encode-images --model /tmp/vitb32 --count 64 --batch 16
    python scripts/peers/torch_peer.py train --model /tmp/vitb32 --ids /tmp/ids.json --batch 64 --blocks 0-2
    python scripts/peers/torch_peer.py make-checkpoint --shape vit-l-14 --dtype bfloat16 --vocab --out /tmp/vitl14-bf16
    python scripts/peers/torch_peer.py dump-text --model /tmp/vitl14 --captions /tmp/captions.txt --out /tmp/peer.h5
    python scripts/peers/torch_peer.py pretrain --model /tmp/peer --batch 256    # after negclip-bench pretrain --peer-dir /tmp/peer

`--ids` is the JSON list of token-id lists that `negclip-bench encode --ids-out` wrote, so both sides
encode exactly the same captions. Threads: 2 (torch.set_num_threads), like the machine.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import transformers
from transformers import CLIPConfig, CLIPModel

SHAPES = {
    "vit-b-32": dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                               num_attention_heads=8, max_position_embeddings=77, vocab_size=49408,
                               eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
                     vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, image_size=224, patch_size=32),
                     projection_dim=512),
    # openai/clip-vit-large-patch14: 123M text + 303M vision parameters (1.7 GB in fp32).
    "vit-l-14": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                               eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
                     vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, image_size=224, patch_size=14),
                     projection_dim=768),
}


def make_checkpoint(args):
    torch.manual_seed(args.seed)
    s = SHAPES[args.shape]
    cfg = CLIPConfig(text_config=s["text"], vision_config=s["vision"], projection_dim=s["projection_dim"])
    model = CLIPModel(cfg)
    if args.dtype != "float32":
        model = model.to(getattr(torch, args.dtype))
    model.save_pretrained(args.out)
    if args.vocab:
        # the real OpenAI vocabulary (from the committed .gz), laid out as openai/clip-vit-base-patch32
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "fixtures"))
        from tokenizer import openai_merges, write_hf_folder
        gz = os.path.join(here, "..", "..", "Tests", "Fixtures", "openai-vocab", "bpe_simple_vocab_16e6.txt.gz")
        write_hf_folder(args.out, openai_merges(gz))
    print(f"wrote {args.shape} ({args.dtype}) random CLIP to {args.out}")


def load(path, threads):
    torch.set_num_threads(threads)
    return CLIPModel.from_pretrained(path, dtype=torch.float32, attn_implementation=ARGS.attn).eval()


def encode_text(args):
    model = load(args.model, args.threads)
    seqs = json.load(open(args.ids))
    pad = model.config.text_config.pad_token_id
    batches = [seqs[i:i + args.batch] for i in range(0, len(seqs), args.batch)]

    def run():
        for b in batches:
            n = 77 if args.padding == "max_length" else max(len(s) for s in b)
            ids = torch.full((len(b), n), pad, dtype=torch.long)
            mask = torch.zeros((len(b), n), dtype=torch.long)
            for i, s in enumerate(b):
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
            model.get_text_features(input_ids=ids, attention_mask=mask)

    with torch.inference_mode():
        run()  # warm-up
        best = min(timed(run) for _ in range(args.repeats))
    tokens = sum(len(s) for s in seqs)
    print(json.dumps({"peer": "transformers", "task": "encode-text", "padding": args.padding,
                      "captions": len(seqs), "tokens": tokens, "batch": args.batch, "seconds": best,
                      "captions_per_s": len(seqs) / best, "threads": args.threads, "attn": args.attn,
                      "torch": torch.__version__, "transformers": transformers.__version__}))


def encode_images(args):
    model = load(args.model, args.threads)
    s = model.config.vision_config.image_size
    torch.manual_seed(0)
    pixels = torch.randn(args.count, 3, s, s)

    def run():
        for i in range(0, args.count, args.batch):
            model.get_image_features(pixel_values=pixels[i:i + args.batch])

    with torch.inference_mode():
        run()
        best = min(timed(run) for _ in range(args.repeats))
    print(json.dumps({"peer": "transformers", "task": "encode-images", "images": args.count,
                      "batch": args.batch, "seconds": best, "images_per_s": args.count / best,
                      "threads": args.threads, "attn": args.attn, "torch": torch.__version__}))


def omni_loss(v_p, t, n, v_a, u, a, scale, margin=0.9):
    """Omni-NegCLIP L = L_pre + L_abs (RESEARCH.md; all lambdas 1, released hinge), as Losses.swift."""
    F = torch.nn.functional
    v_p, t, n, v_a, u, a = (F.normalize(x, dim=-1) for x in (v_p, t, n, v_a, u, a))
    s = scale.exp().clamp(max=100)
    target = torch.arange(v_p.shape[0])
    l1 = F.cross_entropy(s * v_p @ torch.cat([t, n]).T, target)
    l2 = F.cross_entropy(s * t @ v_p.T, target)
    l3 = F.softplus(s * ((v_p * n).sum(-1) - (v_p * t).sum(-1))).mean()
    ta = torch.arange(v_a.shape[0])

    def info_nce(x, y):
        return (F.cross_entropy(s * x @ y.T, ta) + F.cross_entropy(s * y @ x.T, ta)) / 2

    l_text = F.relu((u * a).sum(-1) + margin).mean()
    return (l1 + l2 + l3) / 3 + info_nce(v_a, a) + info_nce(v_a, u) + l_text


def train(args):
    """Omni-NegCLIP text-side steps: a presence batch (image, caption, negation) and an absence batch
    (image, original, rewrite) of `--batch` captions each per step; random frozen image embeddings;
    AdamW (0.9, 0.98), eps 1e-6, wd 0.2 on matrices; trains text blocks `--blocks` (+ embeddings,
    final LN, projection, logit_scale) or, with --only-block, that one block alone."""
    model = load(args.model, args.threads)
    model.train()
    seqs = json.load(open(args.ids))
    pad = model.config.text_config.pad_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    tm = model.text_model
    if args.only_block is not None:
        trainable = list(tm.encoder.layers[args.only_block].parameters())
    else:
        a, b = (int(x) for x in args.blocks.split("-"))
        trainable = [p for l in range(a, b + 1) for p in tm.encoder.layers[l].parameters()]
        trainable += list(tm.embeddings.parameters()) + list(tm.final_layer_norm.parameters())
        trainable += [model.text_projection.weight, model.logit_scale]
    for p in trainable:
        p.requires_grad_(True)
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-6, betas=(0.9, 0.98), eps=1e-6)
    B = args.batch
    dim = model.config.projection_dim
    torch.manual_seed(0)

    def tokens(batch):
        n = max(len(s) for s in batch)
        ids = torch.full((len(batch), n), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return ids, mask

    def feats(batch):
        ids, mask = tokens(batch)
        out = model.get_text_features(input_ids=ids, attention_mask=mask)
        return getattr(out, "pooler_output", out)

    def step(k):
        base = (k * 4 * B) % max(1, len(seqs) - 4 * B)
        parts = [seqs[base + i * B: base + (i + 1) * B] for i in range(4)]
        v_p, v_a = torch.randn(B, dim), torch.randn(B, dim)
        opt.zero_grad(set_to_none=False)
        loss = omni_loss(v_p, feats(parts[0]), feats(parts[1]), v_a, feats(parts[2]), feats(parts[3]), model.logit_scale)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step(0)  # warm-up
    times = []
    for k in range(1, args.steps + 1):
        t = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - t)
    best = min(times)
    print(json.dumps({"peer": "transformers", "task": "train", "batch": B, "captions_per_step": 4 * B,
                      "blocks": args.blocks if args.only_block is None else f"block.{args.only_block}",
                      "steps": args.steps, "best_step_s": best, "median_step_s": sorted(times)[len(times) // 2],
                      "steps_per_s": 1 / best, "threads": args.threads, "attn": args.attn,
                      "torch": torch.__version__, "transformers": transformers.__version__}))


def dump_text(args):
    """What `negclip dump` does, the usual transformers way: a text-only model (CLIPTextModelWithProjection
    reads the text tower and text_projection out of a CLIPModel checkpoint; the vision tensors are
    skipped), the folder's CLIPTokenizer, batches padded to their longest caption, every hidden state at
    the end-of-text token plus pooled and embeds, written to HDF5 with h5py. Reports the peak RSS of this
    whole process (ru_maxrss), to set beside `negclip-bench memory`."""
    import h5py
    import numpy as np
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok = CLIPTokenizer.from_pretrained(args.model)
    full = CLIPConfig.from_pretrained(args.model)
    text_cfg = full.text_config
    text_cfg.projection_dim = full.projection_dim   # CLIPModel's text_projection width is the top-level one
    model = CLIPTextModelWithProjection.from_pretrained(args.model, config=text_cfg, dtype=torch.float32).eval()
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.captions, encoding="utf-8") as f:
        caps = [line.rstrip("\n") for line in f if line.strip()]
    cfg = model.config
    n, w, layers = len(caps), cfg.hidden_size, cfg.num_hidden_layers + 1
    with h5py.File(args.out, "w") as h5, torch.inference_mode():
        hs = h5.create_dataset("text/hidden_states", (layers, n, w), "f4", chunks=(1, min(n, 512), w))
        pooled = h5.create_dataset("text/pooled", (n, w), "f4")
        embeds = h5.create_dataset("text/embeds", (n, cfg.projection_dim), "f4")
        for a in range(0, n, args.batch):
            enc = tok(caps[a:a + args.batch], padding="longest", truncation=True, max_length=77, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            eos = (enc["input_ids"] == cfg.eos_token_id).int().argmax(-1)
            rows = torch.arange(eos.shape[0])
            b = a + eos.shape[0]
            hs[:, a:b] = torch.stack([h[rows, eos] for h in out.hidden_states]).numpy()
            last = out.last_hidden_state[rows, eos]
            pooled[a:b] = last.numpy()
            embeds[a:b] = out.text_embeds.numpy()
    seconds = time.perf_counter() - t0
    print(json.dumps({"peer": "transformers+h5py", "task": "dump-text", "captions": n, "batch": args.batch,
                      "layers": layers, "width": w, "seconds": seconds,
                      "rss_after_load_mib": rss_after_load,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": args.threads, "torch": torch.__version__,
                      "transformers": transformers.__version__, "h5py": h5py.__version__, "numpy": np.__version__}))

def pretrain(args):
    """CLIP pretraining steps from scratch on the shapes `negclip-bench pretrain --peer-dir` wrote
    (config.json + ids.json): both towers forward + backward, symmetric InfoNCE with the clamped
    learnable logit scale, AdamW (0.9, 0.98), eps 1e-6, wd 0.2 on matrices, every parameter trained;
    random pixels; captions padded to the longest of the batch. `--bf16`: bf16 autocast (the PyTorch
    trial of the recipe)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CLIPConfig.from_pretrained(args.model)
    model = CLIPModel._from_config(cfg, attn_implementation=args.attn).float().train()
    seqs = json.load(open(f"{args.model}/ids.json"))
    pad = cfg.text_config.pad_token_id
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    B, S = args.batch, cfg.vision_config.image_size
    F = torch.nn.functional

    def step(k):
        batch = seqs[k * B:(k + 1) * B]
        n = max(len(s) for s in batch)
        ids = torch.full((B, n), pad, dtype=torch.long)
        mask = torch.zeros((B, n), dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        pixels = torch.randn(B, 3, S, S)
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            t = model.get_text_features(input_ids=ids, attention_mask=mask)
            v = model.get_image_features(pixel_values=pixels)
        t, v = getattr(t, "pooler_output", t).float(), getattr(v, "pooler_output", v).float()
        t, v = F.normalize(t, dim=-1), F.normalize(v, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * v @ t.T
        target = torch.arange(B)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.605170185988092)
        return float(loss.detach())

    step(0)  # warm-up
    times = []
    for k in range(1, args.steps + 1):
        times.append(timed(lambda: step(k)))
    best = min(times)
    print(json.dumps({"peer": "transformers", "task": "pretrain", "batch": B, "steps": args.steps,
                      "best_step_s": best, "median_step_s": sorted(times)[len(times) // 2], "steps_per_s": 1 / best,
                      "pairs_per_s": B / best, "bf16_autocast": args.bf16, "threads": args.threads, "attn": args.attn,
                      "parameters": sum(p.numel() for p in params),
                      "torch": torch.__version__, "transformers": transformers.__version__}))


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-checkpoint")
    m.add_argument("--shape", default="vit-b-32", choices=sorted(SHAPES))
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    m.add_argument("--vocab", action="store_true", help="also write the OpenAI vocab.json + merges.txt")
    d = sub.add_parser("dump-text")
    d.add_argument("--model", required=True)
    d.add_argument("--captions", required=True, help="UTF-8 text file, one caption per line")
    d.add_argument("--out", required=True)
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--threads", type=int, default=2)
    for name in ["encode-text", "encode-images"]:
        e = sub.add_parser(name)
        e.add_argument("--model", required=True)
        e.add_argument("--batch", type=int, default=32)
        e.add_argument("--threads", type=int, default=2)
        e.add_argument("--repeats", type=int, default=3)
        e.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
        if name == "encode-text":
            e.add_argument("--ids", required=True)
            e.add_argument("--padding", default="longest", choices=["longest", "max_length"])
        else:
            e.add_argument("--count", type=int, default=64)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--ids", required=True)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--blocks", default="0-2", help="trainable block range a-b (plus embeddings, final LN, projection, scale)")
    t.add_argument("--only-block", type=int, default=None, help="train this one block alone instead")
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    q = sub.add_parser("pretrain")
    q.add_argument("--model", required=True, help="folder with config.json + ids.json from negclip-bench pretrain --peer-dir")
    q.add_argument("--batch", type=int, default=256)
    q.add_argument("--steps", type=int, default=3)
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    q.add_argument("--bf16", action="store_true", help="bf16 autocast (as the PyTorch trial of the recipe)")
    ARGS = p.parse_args()
    {"make-checkpoint": make_checkpoint, "encode-text": encode_text, "encode-images": encode_images,
     "train": train, "dump-text": dump_text, "pretrain": pretrain}[ARGS.cmd](ARGS)


if __name__ == "__main__":
    main()
