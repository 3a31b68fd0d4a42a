"""The PyTorch peer of one sweep unit (`negclip-bench sweep`): text block k of an HF CLIPModel
fine-tuned alone with the Omni-NegCLIP loss on the world's caption records, the same batch (one
presence and one absence batch of B items per step), steps, AdamW (weight decay 0.2) and cosine
schedule with steps/10 warm-up; frozen image embeddings computed once. Prints the time per step.

    python scripts/peers/sweep_unit_torch.py --model models/negclip-mini \
        --data ~/.cache/negclip/worlds/<id>/captions.jsonl --block 6 --steps 20 --batch 16 --lr 1e-3

The peer does not start from cached hidden_states[k] (transformers runs the whole tower with
everything below block k frozen, under torch.no_grad only by autograd's pruning), which is the
honest baseline a user would write. Threads: 2 (torch.set_num_threads), like the machine.
Needs torch + transformers (the wheel in /opt/wheels); without them it prints SKIPPED and exits 0.
"""
import argparse
import json
import math
import os
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import CLIPModel, CLIPTokenizer
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED sweep_unit_torch.py: {e}")
    sys.exit(0)


def features(out):
    """get_*_features: a tensor (transformers 4) or an output whose pooler_output is the projection (5)."""
    return out if torch.is_tensor(out) else out.pooler_output


def omni_loss(scale, img_p, t, n, img_a, u, a, margin=0.9):
    """RESEARCH.md "Omni-NegCLIP in one page": L_pre = (L1 + L2 + L3)/3, L_abs = L_neg + L_orig + L_text."""
    v, t, n = F.normalize(img_p, dim=-1), F.normalize(t, dim=-1), F.normalize(n, dim=-1)
    B = v.shape[0]
    target = torch.arange(B)
    l1 = F.cross_entropy(scale * v @ torch.cat([t, n]).T, target)
    l2 = F.cross_entropy(scale * t @ v.T, target)
    l3 = F.cross_entropy(scale * torch.stack([(v * t).sum(-1), (v * n).sum(-1)], 1), torch.zeros(B, dtype=torch.long))
    va, u, a = F.normalize(img_a, dim=-1), F.normalize(u, dim=-1), F.normalize(a, dim=-1)
    Ba = va.shape[0]
    ta = torch.arange(Ba)

    def info_nce(x, y):
        logits = scale * x @ y.T
        return (F.cross_entropy(logits, ta) + F.cross_entropy(logits.T, ta)) / 2

    l_text = torch.clamp((u * a).sum(-1) + margin, min=0).mean()
    return (l1 + l2 + l3) / 3 + info_nce(va, a) + info_nce(va, u) + l_text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--block", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CLIPModel.from_pretrained(args.model).eval()
    tok = CLIPTokenizer.from_pretrained(args.model)
    root = os.path.dirname(os.path.abspath(args.data))
    records = [json.loads(l) for l in open(args.data) if l.strip()]
    records = [r for r in records if r.get("split") == "train"]
    pres = [r for r in records if r.get("presence_negated")]
    absn = [r for r in records if r.get("absence_negated")]
    need = args.batch * (args.steps + 1)
    pres, absn = pres[:need], absn[:need]
    size = model.config.vision_config.image_size
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)

    def embed_images(paths):
        xs = []
        for path in paths:
            im = Image.open(os.path.join(root, path)).convert("RGB").resize((size, size), Image.BICUBIC)
            x = torch.tensor(list(im.getdata()), dtype=torch.float32).view(size, size, 3).permute(2, 0, 1) / 255
            xs.append((x - mean) / std)
        with torch.no_grad():
            return features(model.get_image_features(pixel_values=torch.stack(xs)))

    t0 = time.time()
    img_p, img_a = embed_images([r["image"] for r in pres]), embed_images([r["image"] for r in absn])
    prep = time.time() - t0
    for name, prm in model.named_parameters():
        prm.requires_grad = name.startswith(f"text_model.encoder.layers.{args.block}.")
    params = [q for q in model.parameters() if q.requires_grad]
    decay = [q for q in params if q.dim() >= 2]
    other = [q for q in params if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": other, "weight_decay": 0.0}], lr=args.lr)
    warm = args.steps // 10

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm)))

    def text(captions):
        enc = tok(captions, padding=True, return_tensors="pt")
        return features(model.get_text_features(**enc))

    scale = model.logit_scale.exp().clamp(max=100).detach()
    times = []
    for s in range(args.steps):
        i = slice(s * args.batch, (s + 1) * args.batch)
        P, A = pres[i], absn[i]
        start = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        loss = omni_loss(scale, img_p[i], text([r["caption"] for r in P]), text([r["presence_negated"] for r in P]),
                         img_a[i], text([r["caption"] for r in A]), text([r["absence_negated"] for r in A]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.time() - start)
        print(f"step {s + 1}/{args.steps} loss {loss.item():.4f} ({1000 * times[-1]:.1f} ms)")
    steady = sorted(times[1:]) or times
    print(f"block.{args.block}: {len(times)} steps x batch {args.batch}, median {1000 * steady[len(steady) // 2]:.1f} ms/step, "
          f"total {sum(times):.2f} s (images embedded in {prep:.1f} s; torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
    main()
