"""The full Omni-NegCLIP run in PyTorch (transformers CLIPModel), one process or DDP under torchrun.

    python scripts/peers/omni_negclip_torch.py --model BASE --data captions.jsonl --layers layers.json --out RUN
    torchrun --nproc_per_node 8 scripts/peers/omni_negclip_torch.py --model BASE --data captions.jsonl \
        --layers layers.json --out RUN --batch 128 --steps 3000

It is `negclip train` for GPUs (docs/training.md, docs/scale.md "Full run on GPUs (DDP)"), with the same
definitions, so a layer choice made here (`negclip select-layers` -> layers.json) drives a ViT-L/14 run
on a cluster:
- data: the caption records of --split (docs/data.md); a record with `presence_negated` is a presence
  item (image, caption t, negation n), one with `absence_negated` an absence item (image, original u,
  rewrite a), as Sources/Training/CaptionTrainingData.swift; captions cut at the tokenizer's context.
- order: the same seeded orders as negclip train (Sources/Training/Loop.swift `SeededOrder`, ported
  below): Fisher-Yates per epoch driven by SplitMix64, presence seed = --seed, absence seed =
  --seed ^ 0xA5A55A5AC3C33C3C; batch b = step b; drop_last; one epoch = full presence batches.
- trainable: the parameters whose transformers names match layers.json `hf_patterns` (fnmatch);
  everything else is frozen (the vision tower always). Layers: "layer l" is hidden_states[l].
- losses (Sources/Training/Losses.swift, RESEARCH.md): s = min(exp(logit_scale), 100), embeddings
  L2-normalised; omni L = L_pre + lambda_stage2 L_abs with L_pre = (L1 + L2 + L3) / 3 and
  L_abs = L_neg + lambda_orig L_orig + lambda_text L_text, L_text = mean relu(cos(u, a) +/- m)
  (--hinge released: + m, shifted: - m); conclip (L1 + L2) / 2; clip and negationclip symmetric InfoNCE.
- optimiser: torch AdamW (betas 0.9/0.98, eps 1e-6), decoupled weight decay on tensors with >= 2
  dimensions only; open_clip's warm-up + cosine schedule (Optimizer.swift `CosineSchedule`); optional
  global-norm clipping; logit_scale clamped to [0, ln 100] after each update when it trains.
- images: the frozen vision tower embeds each image once (CLIPImageProcessor), as negclip train.

DDP: each rank takes its contiguous slice of the global batch (the batch must divide by the world
size), encodes it, and all-gathers the embeddings WITH gradients (open_clip's gather_with_grad, as
torch.distributed.nn.functional.all_gather); every rank then evaluates the loss over the whole global
batch. The all-gather's backward (an all_reduce) sums the W identical losses' gradients into each rank's
slice (W x its share) and DDP averages over the W ranks, so the parameter gradient equals the one-process gradient
of the same global batch (logit_scale's gradient is whole on every rank and averaged to itself).
Backend: nccl on GPUs, gloo on CPU; without torchrun it runs as one plain process.

Writes OUT/log.jsonl (one line per step, sorted keys: step, loss, parts, lr, ms[, grad_norm]) as
negclip train, and OUT/checkpoint-<step>/: save_pretrained's config.json + model.safetensors (F32, the
provenance in the header) + the base folder's tokenizer and preprocessor files, so `negclip evaluate
--model OUT/checkpoint-<step>` and transformers both read it; trainer_state.json (sorted keys) holds
the settings, trainable parameters, data order and provenance. A checkpoint is written into a temp
folder and renamed into place. No --resume yet (a killed run restarts from the base model).
"""
import argparse
import fnmatch
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import time

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
ABSENCE_SEED_XOR = 0xA5A55A5AC3C33C3C
LAYERS_FORMAT = "negclip.layers v3"
LOSSES = ("omni", "conclip", "clip", "negationclip")
LAYER_DEFINITION = ("trainable text blocks index CLIPTextTransformer.encoder.layers; block i maps hidden_states[i] "
                    "to hidden_states[i+1] (hidden_states[0] = embeddings)")


class InputError(Exception):
    """Bad input: reported as one line (file, key/line, what was expected) and exit status 2."""


# ----------------------------------------------------------------------------------------------
# data order: a port of Sources/Training/Loop.swift SeededOrder (bit-identical; UInt64 wrap-around)

class SeededOrder:
    def __init__(self, count, seed):
        self.count, self.seed = count, seed & MASK64
        self._cache = {}

    def permutation(self, epoch):
        if epoch in self._cache:
            return self._cache[epoch]
        state = (self.seed + GOLDEN * (epoch + 1)) & MASK64
        p = list(range(self.count))
        for i in range(self.count - 1, 0, -1):
            state = (state + GOLDEN) & MASK64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            z ^= z >> 31
            j = z % (i + 1)
            p[i], p[j] = p[j], p[i]
        self._cache = {epoch: p}      # one epoch at a time is all a run needs
        return p

    def batch(self, b, size):
        """Item indices of batch b (0-based over the run); batches never straddle epochs (drop_last)."""
        per_epoch = max(1, self.count // size)
        epoch, i = divmod(b, per_epoch)
        return self.permutation(epoch)[i * size:(i + 1) * size]


def cosine_lr(step, base, warmup, total):
    """open_clip scheduler.cosine_lr, as Optimizer.swift CosineSchedule."""
    if step < warmup:
        return base * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base


# ----------------------------------------------------------------------------------------------
# inputs

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(model_dir):
    """As CLIPModel.weightsSHA256 (Sources/Provenance SHA256Hasher.hex(filesAt:)): the file's sha256, or
    for shards sha256 over "name:sha256\\n" lines in the index's shard order."""
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return sha256_file(single)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        raise InputError(f"{model_dir}: expected model.safetensors or model.safetensors.index.json (an HF CLIPModel folder)")
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s}:{sha256_file(os.path.join(model_dir, s))}\n".encode())
    return h.hexdigest()


def nonempty_string(rec, key, where, required):
    v = rec.get(key)
    if v is None:
        if required:
            raise InputError(f"{where}: field '{key}': expected a non-empty string, found none")
        return None
    if not isinstance(v, str) or not v:
        raise InputError(f"{where}: field '{key}': expected a non-empty string, found {json.dumps(v)}")
    return v


def read_caption_items(path, split):
    """Presence and absence items of `split`, in file order, as CaptionTrainingData.read: (image path,
    caption, presence_negated) and (image path, caption, absence_negated). Stops at the first bad
    caption record with one line (negclip train skips bad lines and reports them: fix the file so that
    both see the same items)."""
    presence, absence = [], []
    base = os.path.dirname(os.path.abspath(path))
    ids = set()
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: expected a readable JSONL file of caption records (docs/data.md): {e.strerror}")
    with f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{where}: expected UTF-8 text, found the byte 0x{raw[e.start]:02X} at byte {e.start + 1} of the line")
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: expected one JSON object, {e.msg} at column {e.colno}")
            if not isinstance(rec, dict):
                raise InputError(f"{where}: expected one JSON object, found {type(rec).__name__}")
            if rec.get("type") != "caption":
                continue
            rid = rec.get("id")
            if rid in ids:
                raise InputError(f"{where}: field 'id': expected ids unique per type, found {json.dumps(rid)} again")
            ids.add(rid)
            if rec.get("split") != split:
                continue
            image = nonempty_string(rec, "image", where, True)
            caption = nonempty_string(rec, "caption", where, True)
            pn = nonempty_string(rec, "presence_negated", where, False)
            an = nonempty_string(rec, "absence_negated", where, False)
            for key, v in (("presence_negated", pn), ("absence_negated", an)):
                if v is not None and v == caption:
                    raise InputError(f"{where}: field '{key}': expected a rewrite differing from its caption, found the caption itself")
            img = image if image.startswith("/") else os.path.join(base, image)
            if pn is not None:
                presence.append((img, caption, pn))
            if an is not None:
                absence.append((img, caption, an))
    return presence, absence


def read_layers(path, model_sha, allow_other_model):
    try:
        with open(path) as f:
            sel = json.load(f)
    except OSError as e:
        raise InputError(f"{path}: expected a readable layers.json (negclip select-layers): {e.strerror}")
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: expected a JSON object (select-layers output): {e.msg} at line {e.lineno}")
    if not isinstance(sel, dict) or sel.get("format") != LAYERS_FORMAT:
        found = sel.get("format") if isinstance(sel, dict) else None
        raise InputError(f"{path}: key 'format': expected \"{LAYERS_FORMAT}\", found {json.dumps(found)}")
    for key in ("groups", "hf_patterns"):
        v = sel.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise InputError(f"{path}: key '{key}': expected a non-empty array of strings, found {json.dumps(v)}")
    measured = (sel.get("provenance") or {}).get("model_sha256")
    if measured is not None and measured != model_sha and not allow_other_model:
        raise InputError(f"{path}: key 'provenance.model_sha256': the layers were selected on weights {measured[:12]}, "
                         f"--model has {model_sha[:12]}; pass --allow-other-model to train this choice on another model")
    return sel


# ----------------------------------------------------------------------------------------------
# losses (Losses.swift); v, t, ... are raw tower outputs, normalised here

def losses(kind, emb, logit_scale, a):
    import torch
    import torch.nn.functional as F

    s = logit_scale.exp().clamp(max=100.0)   # clamp passes the gradient where exp <= 100 (inclusive), as Swift
    y = {k: F.normalize(v, dim=-1) for k, v in emb.items()}

    def ce(q, keys):
        logits = s * q @ keys.t()
        return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))

    def infonce(x, z):
        return (ce(x, z) + ce(z, x)) / 2

    parts = {}
    if kind in ("omni", "conclip"):
        v, t, n = y["p.image"], y["p.caption"], y["p.negated"]
        l1 = ce(v, torch.cat([t, n]))
        l2 = ce(t, v)
        parts.update(L1=l1, L2=l2)
        if kind == "conclip":
            loss = (l1 + l2) / 2
            parts["L_conclip"] = loss
        else:
            # L3 = mean CE([s v.t, s v.n], 0) = mean softplus(s (v.n - v.t))
            l3 = F.softplus(s * ((v * n).sum(-1) - (v * t).sum(-1))).mean()
            loss = (l1 + l2 + l3) / 3
            parts.update(L3=l3, L_pre=loss)
    elif kind == "clip":
        loss = infonce(y["p.image"], y["p.caption"])
        parts["L_clip"] = loss
    elif kind == "negationclip":
        loss = infonce(y["a.image"], y["a.rewritten"])
        parts["L_rewrite"] = loss
    if kind == "omni":
        v, u, r = y["a.image"], y["a.original"], y["a.rewritten"]
        neg, orig = infonce(v, r), infonce(v, u)
        offset = a.margin if a.hinge == "released" else -a.margin
        text = torch.relu((u * r).sum(-1) + offset).mean()
        labs = neg + a.lambda_orig * orig + a.lambda_text * text
        parts.update(L_neg=neg, L_orig=orig, L_text=text, L_abs=labs)
        loss = loss + a.lambda_stage2 * labs
        parts["L"] = loss
    return loss, parts


# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Omni-NegCLIP fine-tuning of chosen text blocks in PyTorch, one process "
                                "or DDP under torchrun (negclip train's definitions; vision tower frozen).")
    p.add_argument("--model", required=True, help="HF CLIPModel folder to start from (config.json, model.safetensors, tokenizer).")
    p.add_argument("--data", required=True, help="caption records (JSONL, docs/data.md); image paths relative to the file")
    p.add_argument("--split", default="train", help="records of this split only (default train)")
    p.add_argument("--layers", required=True, help="layers.json from negclip select-layers: its hf_patterns train, the rest is frozen")
    p.add_argument("--allow-other-model", action="store_true", help="accept a layers.json selected on other weights than --model")
    p.add_argument("--loss", default="omni", choices=LOSSES)
    p.add_argument("--lambda-stage2", type=float, default=1.0, help="weight of L_abs in L = L_pre + lambda_stage2 L_abs (default 1)")
    p.add_argument("--lambda-orig", type=float, default=1.0, help="weight of L_orig in L_abs (default 1)")
    p.add_argument("--lambda-text", type=float, default=1.0, help="weight of L_text in L_abs (default 1)")
    p.add_argument("--margin", type=float, default=0.9, help="margin m of L_text, cosine units (default 0.9)")
    p.add_argument("--hinge", default="released", choices=("released", "shifted"),
                   help="L_text: released = max(0, cos + m) (as published), shifted = max(0, cos - m)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: --epochs worth)")
    p.add_argument("--epochs", type=int, default=30, help="epochs over the presence set when --steps is absent (default 30)")
    p.add_argument("--batch", type=int, default=128, help="GLOBAL items per batch per stage, over all ranks (default 128)")
    p.add_argument("--lr", type=float, default=1e-6, help="peak AdamW learning rate (default 1e-6)")
    p.add_argument("--weight-decay", type=float, default=0.2, help="decoupled weight decay, matrices only (default 0.2)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps before the cosine decay to 0 (default 50)")
    p.add_argument("--clip-grad", type=float, help="clip the global gradient L2 norm to this (default off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, unsigned 64-bit (default 0)")
    p.add_argument("--out", required=True, help="run directory (log.jsonl, checkpoint-<step>/)")
    p.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: only at the end)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept, newest first; 0 keeps all (default 3)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    p.add_argument("--image-batch", type=int, default=64, help="images per frozen vision-tower forward (default 64)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's)")
    a = p.parse_args(argv)
    for name in ("batch", "image_batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.steps is not None and a.steps < 1:
        p.error("--steps must be at least 1")
    if not 0 <= a.seed <= MASK64:
        p.error("--seed must be an unsigned 64-bit integer")
    return a


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(x) for x in argv]
    a = parse_args(argv)
    a.command_line = " ".join([os.path.basename(sys.executable), os.path.abspath(__file__)] + argv)
    try:
        return run(a)
    except InputError as e:
        log(f"omni_negclip_torch: {e}")
        return 2


def run(a):
    import torch
    import torch.distributed as dist
    import transformers
    from torch.nn.parallel import DistributedDataParallel as DDP
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    transformers.utils.logging.disable_progress_bar()   # our own progress lines only (stderr, rank 0)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        # fp32 as negclip train: no TF32 in matmuls (torch's default) nor in cuDNN convolutions (the patch embedding)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    distributed = world > 1
    backend = ("nccl" if use_cuda else "gloo") if distributed else "none"
    if distributed:
        dist.init_process_group(backend=backend)
    main_rank = rank == 0
    say = log if main_rank else (lambda _: None)

    # --- inputs (every rank reads them; they are small next to the model) ---
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        raise InputError(f"{a.model}: expected an HF CLIPModel folder with config.json")
    model_sha = weights_sha256(a.model)
    sel = read_layers(a.layers, model_sha, a.allow_other_model)
    if os.path.exists(os.path.join(a.out, "log.jsonl")) or (
            os.path.isdir(a.out) and any(n.startswith("checkpoint-") for n in os.listdir(a.out))):
        raise InputError(f"{a.out}: already holds a run; choose a new --out (this script does not resume)")
    presence, absence = read_caption_items(a.data, a.split)
    uses_presence, uses_absence = a.loss != "negationclip", a.loss in ("omni", "negationclip")
    if uses_presence and not presence:
        raise InputError(f"{a.data}: --loss {a.loss} needs caption records with presence_negated in split {a.split}; found none")
    if uses_absence and not absence:
        raise InputError(f"{a.data}: --loss {a.loss} needs caption records with absence_negated in split {a.split}; found none")

    model = CLIPModel.from_pretrained(a.model, dtype=torch.float32).to(device).eval()   # eval: no dropout
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    processor = AutoImageProcessor.from_pretrained(a.model)

    # trainable parameters: layers.json hf_patterns; everything else frozen
    names = [n for n, _ in model.named_parameters()]
    trainable = set()
    for pat in sel["hf_patterns"]:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise InputError(f"{a.layers}: key 'hf_patterns': pattern {pat} matches no parameter of {a.model} "
                             f"(layers.json was made for {sel.get('text_blocks')} text blocks)")
        trainable.update(hit)
    if any(n.startswith("vision_model.") or n.startswith("visual_projection") for n in trainable):
        raise InputError(f"{a.layers}: key 'hf_patterns': selects vision-tower parameters; the vision tower stays frozen")
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)

    # --- tokens: captions as transformers' truncation=True cuts them (context = the position table) ---
    context = model.config.text_config.max_position_embeddings
    texts = sorted({c for it in presence + absence for c in it[1:]})
    enc = tokenizer(texts, truncation=True, max_length=context)["input_ids"]
    token_ids = dict(zip(texts, enc))
    truncated = sum(1 for t in texts if len(tokenizer(t)["input_ids"]) > context)
    if truncated:
        say(f"data: {truncated} captions longer than {context} tokens were truncated")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.text_config.eos_token_id

    # --- frozen image embeddings: each image once, in order of first appearance (CaptionTrainingData) ---
    rows, image_paths = {}, []
    for it in presence + absence:
        if it[0] not in rows:
            rows[it[0]] = len(image_paths)
            image_paths.append(it[0])
    from PIL import Image
    t0 = time.time()
    chunks = []
    with torch.no_grad():
        # ranks embed interleaved chunks of the image list; gathered below (one all_gather per chunk round)
        starts = list(range(0, len(image_paths), a.image_batch))
        rounds = (len(starts) + world - 1) // world
        for r in range(rounds):
            k = r * world + rank
            mine = None
            if k < len(starts):
                part = []
                for p in image_paths[starts[k]:starts[k] + a.image_batch]:
                    try:
                        with Image.open(p) as im:
                            part.append(im.convert("RGB"))
                    except (OSError, ValueError) as e:
                        raise InputError(f"{a.data}: image {p}: expected a readable image file: {e}")
                px = processor(images=part, return_tensors="pt")["pixel_values"].to(device)
                mine = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
            if distributed:
                dim = model.config.projection_dim
                buf = torch.zeros(a.image_batch, dim, device=device)
                if mine is not None:
                    buf[:mine.shape[0]] = mine
                got = [torch.empty_like(buf) for _ in range(world)]
                dist.all_gather(got, buf)
                for w in range(world):
                    kk = r * world + w
                    if kk < len(starts):
                        chunks.append(got[w][:len(image_paths[starts[kk]:starts[kk] + a.image_batch])])
            else:
                chunks.append(mine)
    image_embeds = torch.cat(chunks)
    say(f"data: {len(presence)} presence + {len(absence)} absence items, {len(image_paths)} images embedded by the "
        f"frozen vision tower ({time.time() - t0:.1f} s)")

    # --- order and batches (CaptionBatcher) ---
    pb = min(a.batch, max(1, len(presence)))
    ab = min(a.batch, max(1, len(absence)))
    porder = SeededOrder(len(presence), a.seed)
    aorder = SeededOrder(len(absence), a.seed ^ ABSENCE_SEED_XOR)
    for used, b, what in ((uses_presence, pb, "presence"), (uses_absence, ab, "absence")):
        if used and b % world:
            raise InputError(f"--batch: the {what} batch of {b} items does not divide among {world} processes; "
                             f"choose a batch (or process count) that does")
    steps_per_epoch = max(1, len(presence) // pb) if uses_presence else max(1, len(absence) // ab)
    total = a.steps if a.steps is not None else a.epochs * steps_per_epoch
    if total < 1:
        raise InputError("--steps must be at least 1")

    # --- DDP: one module whose forward encodes the local captions and returns logit_scale ---
    class TextSide(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, input_ids, attention_mask):
            out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.clip.text_projection(out.pooler_output), self.clip.logit_scale

    net = TextSide(model)
    if distributed:
        net = DDP(net, device_ids=[local_rank] if use_cuda else None)

    params = [p for n, p in model.named_parameters() if n in trainable]
    decay = [p for n, p in model.named_parameters() if n in trainable and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if n in trainable and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    scale_trains = "logit_scale" in trainable

    def batch_tensors(captions):
        seqs = [token_ids[c] for c in captions]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return ids.to(device), mask.to(device)

    class GatherWithGrad(torch.autograd.Function):
        """open_clip's gather_with_grad: the rows of every rank in rank order. Every rank computes the same
        global loss, so the gradient of its slice is the sum over ranks of their gradients for that slice
        (one all_reduce; what torch.distributed.nn.functional.all_gather, now deprecated, does)."""

        @staticmethod
        def forward(ctx, x):
            ctx.rows = x.shape[0]
            parts = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(parts, x.contiguous())
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, g):
            g = g.contiguous().clone()
            dist.all_reduce(g)
            return g[rank * ctx.rows:(rank + 1) * ctx.rows]

    def gather(x):
        return GatherWithGrad.apply(x) if distributed else x

    groups = sel["groups"]
    settings = {
        "loss": a.loss, "lambda_stage2": str(a.lambda_stage2), "lambda_orig": str(a.lambda_orig),
        "lambda_text": str(a.lambda_text), "margin": str(a.margin), "hinge": a.hinge,
        "trainable_groups": ",".join(groups), "seed": str(a.seed), "batch": str(a.batch), "split": a.split,
        "steps": str(total), "lr": str(a.lr), "weight_decay": str(a.weight_decay), "warmup": str(a.warmup),
        "clip_grad": "off" if a.clip_grad is None else str(a.clip_grad),
        "base_model_sha256": model_sha, "data_sha256": sha256_file(a.data),
    }
    provenance = dict(settings)
    provenance.update({
        "tool": "scripts/peers/omni_negclip_torch.py", "tool_version": "torch " + torch.__version__ + ", transformers " + transformers.__version__,
        "command_line": a.command_line,
        "base_model": a.model, "data": a.data, "layer_definition": LAYER_DEFINITION,
        "trainable_spec": f"layers.json {a.layers}", "truncated_captions": str(truncated),
        "layers_file": a.layers, "layers_sha256": sha256_file(a.layers),
        "layers_model_sha256": (sel.get("provenance") or {}).get("model_sha256", "unknown"),
        "world_size": str(world), "backend": backend, "device": device.type,
    })

    if main_rank:
        os.makedirs(a.out, exist_ok=True)
        logf = open(os.path.join(a.out, "log.jsonl"), "a")
    say(f"train: loss {a.loss}, {total} steps, batch {pb}+{ab} over {world} process(es) ({backend}), lr {a.lr}, "
        f"trainable {','.join(groups)} ({sum(p.numel() for p in params)} parameters)")

    def save(step):
        if main_rank:
            save_checkpoint(a, model, step, total, provenance, settings, groups, sorted(trainable),
                            {"kind": "SeededOrder: Fisher-Yates per epoch, SplitMix64 seeded with (seed, epoch); batch b = step b; drop_last",
                             "presence_seed": str(porder.seed), "presence_items": porder.count, "presence_batch": pb,
                             "absence_seed": str(aorder.seed), "absence_items": aorder.count, "absence_batch": ab,
                             "next_batch": step})
        if distributed:
            dist.barrier()

    started = time.time()
    every = max(1, total // 20)
    for step in range(total):
        t0 = time.time()
        emb, captions, slices = {}, [], {}
        # this rank's slice of the global batch; the caption kinds go through the text tower in one forward
        if uses_presence:
            g = [presence[i] for i in porder.batch(step, pb)]
            mine = g[rank * (pb // world):(rank + 1) * (pb // world)]
            emb["p.image"] = image_embeds[[rows[it[0]] for it in g]]
            kinds = [("p.caption", 1)] + ([("p.negated", 2)] if a.loss != "clip" else [])
            for key, col in kinds:
                slices[key] = (len(captions), len(mine))
                captions += [it[col] for it in mine]
        if uses_absence:
            g = [absence[i] for i in aorder.batch(step, ab)]
            mine = g[rank * (ab // world):(rank + 1) * (ab // world)]
            emb["a.image"] = image_embeds[[rows[it[0]] for it in g]]
            kinds = [("a.rewritten", 2)] + ([("a.original", 1)] if a.loss == "omni" else [])
            for key, col in kinds:
                slices[key] = (len(captions), len(mine))
                captions += [it[col] for it in mine]
        out, logit_scale = net(*batch_tensors(captions))
        for key, (o, n) in slices.items():
            emb[key] = gather(out[o:o + n])
        loss, parts = losses(a.loss, emb, logit_scale, a)
        if not torch.isfinite(loss):
            bad = sorted(k for k, v in parts.items() if not torch.isfinite(v))
            inner = [k for k in bad if k not in ("L", "L_pre", "L_abs")]
            name = (inner or bad or ["L"])[0]
            raise InputError(f"step {step}: loss part {name} is {parts.get(name, loss).item()}; stopped before the update "
                             f"(lower --lr, set --clip-grad, or check the data)")
        opt.zero_grad(set_to_none=False)
        loss.backward()
        grad_norm = None
        if a.clip_grad is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, a.clip_grad))
        lr = cosine_lr(step, a.lr, a.warmup, total)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        if scale_trains:
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100.0))
        ms = (time.time() - t0) * 1000
        if main_rank:
            rec = {"step": step, "loss": loss.item(), "parts": {k: v.item() for k, v in parts.items()}, "lr": lr,
                   "ms": round(ms, 3)}
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm
            logf.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")
            logf.flush()
            done = step + 1
            if done == 1 or done % every == 0 or done == total:
                eta = (time.time() - started) / done * (total - done)
                log(f"step {done}/{total} loss {loss.item():.4f} ({ms:.1f} ms) eta {eta:.0f} s")
        if a.save_every > 0 and (step + 1) % a.save_every == 0 and step + 1 < total:
            save(step + 1)
    say(f"finished {total} steps in {time.time() - started:.1f} s")
    save(total)
    if main_rank:
        logf.close()
        print(os.path.join(a.out, f"checkpoint-{total}"))
    if distributed:
        # DDP's reducer holds the process group: release it while the peers are still there (freeing it
        # after destroy_process_group, as the frame unwinds, hung a gloo rank at exit now and then)
        dist.barrier()
        del net
        gc.collect()
        dist.destroy_process_group()
    return 0


def save_checkpoint(a, model, step, total, provenance, settings, groups, trainable, order):
    """OUT/checkpoint-<step>: save_pretrained + the base folder's tokenizer/preprocessor files, the
    provenance in model.safetensors' header; written into a temp folder and renamed into place."""
    import torch
    from safetensors.torch import load_file, save_file

    tmp = os.path.join(a.out, f".tmp-checkpoint-{step}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
    meta = dict(provenance, step=str(step), format="pt")
    st = os.path.join(tmp, "model.safetensors")
    tensors = load_file(st)
    save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}, st + ".part", metadata=meta)
    os.replace(st + ".part", st)
    for name in sorted(os.listdir(a.model)):
        src = os.path.join(a.model, name)
        if name == "config.json" or name.endswith(".safetensors") or name.endswith(".safetensors.index.json") or not os.path.isfile(src):
            continue
        shutil.copyfile(src, os.path.join(tmp, name))
    state = {"format": "negclip.torch-trainer-state v1", "step": step, "steps_total": total,
             "trainable_groups": groups, "trainable_parameters": trainable, "data_order": order,
             "settings": settings, "provenance": dict(provenance, step=str(step))}
    with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
        json.dump(state, f, sort_keys=True, indent=2)
        f.write("\n")
    dst = os.path.join(a.out, f"checkpoint-{step}")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    if a.keep >= 1:
        have = sorted((int(n.split("-", 1)[1]), n) for n in os.listdir(a.out)
                      if n.startswith("checkpoint-") and n.split("-", 1)[1].isdigit())
        for _, n in have[:-a.keep]:
            shutil.rmtree(os.path.join(a.out, n))


if __name__ == "__main__":
    sys.exit(main())
