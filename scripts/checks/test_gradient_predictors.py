"""probe-layers' gradient predictors (Sources/Probing/GradientPredictors.swift) against torch autograd.

On a tiny world (`negclip make-world --size 40`) and Tests/Fixtures/tiny-clip, `negclip probe-layers`
writes report.json `gradients`: per group (embeddings, block.0...) and batch the relative gradient
norm ||g|| / ||w|| and the Fisher per parameter ||g||^2 / n of the Omni-NegCLIP loss at the base
weights. The world's training split holds fewer than 16 x 16 items of each kind, so every item is
used in file order and batch b is CaptionBatcher's: SeededOrder(count, 0).batch(b, min(16, count))
(and seed ^ the absence constant for absence items), which scripts/peers/omni_negclip_torch.py ports.
Here the same batches go through transformers' CLIPModel with that script's loss, and every group's
gradient norm, weight norm and parameter count must agree (1e-4 relative; float32 both sides).
"""
import json
import os
import subprocess
import sys
import types

import pytest
from negclip_cli import negclip_binary

torch = pytest.importorskip("torch", reason="SKIPPED: torch not installed; gradient predictors not checked against autograd")
pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; gradient predictors not checked")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "peers"))
import omni_negclip_torch as peer  # noqa: E402

TINY = os.path.join(ROOT, "Tests", "Fixtures", "tiny-clip")


def negclip(*args):
    r = subprocess.run([negclip_binary(), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"negclip {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("gradients")
    world, out = d / "world", d / "report"
    negclip("make-world", "--out", world, "--seed", "5", "--size", "40", "--image-size", "32")
    negclip("probe-layers", "--model", TINY, "--data", world / "captions.jsonl", "--split", "val", "--out", out,
            "--no-sweep", "--no-random", "--folds", "2", "--seeds", "0", "--bootstrap", "20")
    with open(out / "report.json") as f:
        r = json.load(f)
    return r, world / "captions.jsonl"


def group_of(name):
    if name.startswith("text_model.embeddings."):
        return "embeddings"
    if name.startswith("text_model.encoder.layers."):
        return "block." + name.split(".")[3]
    return None


def test_gradient_norms_equal_torch_autograd(report):
    r, data = report
    g = r.get("gradients")
    assert g is not None, f"report.json has no gradients: {r.get('gradients_unavailable')}"
    assert g["loss"]["loss"] == "omni" and g["split"] == "train"
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
    from PIL import Image
    import torch.nn.functional as F  # noqa: F401

    presence, absence = peer.read_caption_items(str(data), "train")
    want = g["batches"] * 16
    assert len(presence) <= want and len(absence) <= want, "the check assumes every item is used in file order"
    model = CLIPModel.from_pretrained(TINY, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(TINY)
    proc = AutoImageProcessor.from_pretrained(TINY)
    for n, p in model.named_parameters():
        p.requires_grad_(group_of(n) is not None)

    def embed_images(paths):
        with torch.no_grad():
            ims = [Image.open(p).convert("RGB") for p in paths]
            px = proc(images=ims, return_tensors="pt")["pixel_values"]
            return model.visual_projection(model.vision_model(pixel_values=px).pooler_output)

    def embed_texts(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")
        out = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return model.text_projection(out.pooler_output)

    args = types.SimpleNamespace(margin=float(g["loss"]["margin"]), hinge=g["loss"]["hinge"], lambda_orig=float(g["loss"]["lambda_orig"]),
                                 lambda_text=float(g["loss"]["lambda_text"]), lambda_stage2=float(g["loss"]["lambda_stage2"]))
    pb, ab = g["presence_per_batch"], g["absence_per_batch"]
    porder = peer.SeededOrder(len(presence), g["seed"])
    aorder = peer.SeededOrder(len(absence), g["seed"] ^ peer.ABSENCE_SEED_XOR)
    groups = {x["name"]: x for x in g["groups"]}
    params = {}
    for n, p in model.named_parameters():
        k = group_of(n)
        if k is not None:
            params.setdefault(k, []).append(p)
    for k, ps in params.items():
        n = sum(p.numel() for p in ps)
        w = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in ps)).item()
        assert groups[k]["parameter_count"] == n
        assert abs(groups[k]["weight_norm"] - w) <= 1e-5 * w, f"{k}: weight norm {groups[k]['weight_norm']} vs {w}"
    worst = 0.0
    for b in range(g["batches"]):
        P = [presence[i] for i in porder.batch(b, pb)]
        A = [absence[i] for i in aorder.batch(b, ab)]
        model.zero_grad()
        emb = {"p.image": embed_images([x[0] for x in P]), "p.caption": embed_texts([x[1] for x in P]),
               "p.negated": embed_texts([x[2] for x in P]), "a.image": embed_images([x[0] for x in A]),
               "a.original": embed_texts([x[1] for x in A]), "a.rewritten": embed_texts([x[2] for x in A])}
        loss, _ = peer.losses("omni", emb, model.logit_scale.detach(), args)
        loss.backward()
        for k, ps in params.items():
            sq = sum((p.grad.double() ** 2).sum() for p in ps if p.grad is not None).item()
            x = groups[k]
            ours = x["fisher_per_batch"][b] * x["parameter_count"]
            rel = abs(ours - sq) / sq
            worst = max(worst, rel)
            assert rel <= 1e-4, f"batch {b} {k}: ||g||^2 {ours} (negclip) vs {sq} (torch)"
            rgn = (sq ** 0.5) / x["weight_norm"]
            assert abs(x["rgn_per_batch"][b] - rgn) <= 1e-4 * rgn
    print(f"gradient predictors: {g['batches']} batches x {len(params)} groups, max relative difference {worst:.2e}")
