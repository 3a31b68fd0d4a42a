"""Activation patching (Sources/Probing/ActivationPatching.swift) against transformers + forward hooks.

`negclip probe-layers` on a small world (make-world --size 200) writes, per patching item, the token
ids of its clean and corrupted runs, the role positions, the image embedding, the causal-tracing noise
and every per-item number (/patching/items in probe-layers.h5, docs/hdf5-schema.md). Here transformers'
CLIPModel recomputes each number with PyTorch forward hooks on the same inputs:

* residual patching: hidden_states[l] (the input of encoder.layers[l], or the last layer's output for
  l = L) of the corrupted run takes the clean run's rows at each role's positions (and at every row);
* causal tracing: the noise is added to hidden_states[0] before any restore;
* head patching: the input of self_attn.out_proj (TransformerLens attn.hook_z) takes one head's
  clean columns at every row;
* mean-ablation: self_attn's / mlp's output replaced by its mean over the minimal pairs' tokens, and the
  ratio-of-means fraction removed compared with /patching/attention_ablation, /patching/mlp_ablation.

The decision is s = exp(logit_scale) * cos(image_embeds, text_embeds); per item s(patched) - s(corrupt)
must agree within 1e-4. The minimal pairs must be the world's own (`minimal_pair` of the val records:
clean = the true caption's token ids, corrupted = the false caption's). Runs on the tiny CLIP fixture
and on the built-in model (models/negclip-mini). Without torch/transformers it prints a loud SKIPPED
line (a failure under CI).

`test_reader_matches_report_json` (no torch needed): notebooks-export/negclip_h5.py's `patching()`
reads back every number report.json's `patching` holds (experiments, template slices, ablation,
heads, pair counts), and plot_patching.py draws its heat map.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import json

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from negclip_cli import negclip_binary  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "notebooks-export"))
ATOL = 1e-4
_cache: dict = {}


def _need_torch():
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("SKIPPED test_patching: torch/transformers are not installed (scripts/ci/python_checks.sh installs them from /opt/wheels)")
        pytest.skip("SKIPPED: torch/transformers not installed")


def _run(cmd):
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def _report(model_dir: Path) -> Path:
    """probe-layers on a 200-scene world with patching (6 items per experiment); returns the h5 path."""
    key = str(model_dir)
    if key in _cache:
        return _cache[key]
    work = Path(tempfile.mkdtemp(prefix="negclip-patching-"))
    if "world" not in _cache:
        _run([negclip_binary(), "make-world", "--out", work / "world", "--seed", "3", "--size", "200"])
        _cache["world"] = work / "world"
    out = work / ("report-" + model_dir.name)
    _run([negclip_binary(), "probe-layers", "--model", model_dir, "--data", _cache["world"] / "captions.jsonl",
          "--out", out, "--no-sweep", "--no-random", "--task", "negated", "--patching-items", "6", "--bootstrap", "50"])
    _cache[key] = out / "probe-layers.h5"
    return _cache[key]


class Hooked:
    """A CLIPModel with the hook points of our TextHooks, written as PyTorch forward hooks."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import CLIPModel

        self.torch = torch
        torch.set_num_threads(1)   # hundreds of tiny forwards: threads only contend
        self.model = CLIPModel.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
        self.layers = self.model.text_model.encoder.layers
        self.L = len(self.layers)
        self.scale = float(self.model.logit_scale.detach().exp())
        self.heads = self.model.config.text_config.num_attention_heads

    def run(self, ids, edits, capture=False):
        """edits: list of (point, rows, cols, values[n, W] numpy, add); point = ('resid', l) | ('z', k) |
        ('attn_out', k) | ('mlp_out', k). Returns (text_embeds[0], captured residuals)."""
        torch = self.torch
        handles, cap = [], {}

        def apply(point, x):
            for p, rows, cols, values, add in edits:
                if p != point:
                    continue
                v = torch.as_tensor(values, dtype=x.dtype)
                for r in rows:
                    if add:
                        x[0, r, cols] += v[r, cols]
                    else:
                        x[0, r, cols] = v[r, cols]
            if capture:
                cap[point] = x[0].detach().clone().numpy()
            return x

        def pre(l):
            def f(mod, args, kwargs):
                if args:
                    h = args[0].clone()
                    return (apply(("resid", l), h),) + tuple(args[1:]), kwargs
                h = kwargs["hidden_states"].clone()
                kwargs["hidden_states"] = apply(("resid", l), h)
                return args, kwargs
            return f

        def post_last(mod, args, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h = apply(("resid", self.L), h)
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

        def z_pre(k):
            def f(mod, args):
                return (apply(("z", k), args[0].clone()),)
            return f

        def out_hook(name, k):
            def f(mod, args, out):
                if isinstance(out, tuple):
                    return (apply((name, k), out[0].clone()),) + tuple(out[1:])
                return apply((name, k), out.clone())
            return f

        for l, layer in enumerate(self.layers):
            handles.append(layer.register_forward_pre_hook(pre(l), with_kwargs=True))
            handles.append(layer.self_attn.out_proj.register_forward_pre_hook(z_pre(l)))
            handles.append(layer.self_attn.register_forward_hook(out_hook("attn_out", l)))
            handles.append(layer.mlp.register_forward_hook(out_hook("mlp_out", l)))
        handles.append(self.layers[-1].register_forward_hook(post_last))
        try:
            with torch.no_grad():
                t = torch.tensor([list(ids)], dtype=torch.long)
                emb = self.model.get_text_features(input_ids=t)
                emb = emb.pooler_output if hasattr(emb, "pooler_output") else emb
        finally:
            for h in handles:
                h.remove()
        return emb[0].numpy().astype(np.float64), cap

    def score(self, emb, image):
        image = np.asarray(image, dtype=np.float64)
        return self.scale * float(emb @ image / (np.linalg.norm(emb) * np.linalg.norm(image)))


def _items(h5):
    g = h5["patching/items"]
    kinds = [k.decode() if isinstance(k, bytes) else k for k in g["kind"][()]]
    n = len(kinds)
    lengths = g["length"][()].astype(int)
    out = []
    noise_i = 0
    for i in range(n):
        L = lengths[i]
        roles = [[int(p) for p in g["role_positions"][i, r] if p >= 0] for r in range(g["role_positions"].shape[1])]
        item = dict(kind=kinds[i], clean=g["clean_ids"][i, :L].astype(int), corrupt=g["corrupt_ids"][i, :L].astype(int),
                    template=(g["template"].asstr()[i] if "template" in g else ""),
                    roles=roles, image=g["image_embeds"][i], decision=float(g["decision"][i]),
                    restored=g["restored"][i], all_positions=g["all_positions"][i], noise=None)
        if kinds[i] == "causal_tracing":
            item["noise"] = g["noise"][noise_i, :, :L, :]
            noise_i += 1
        out.append(item)
    return out


def _check_model(model_dir: Path):
    _need_torch()
    path = _report(model_dir)
    m = Hooked(model_dir)
    with h5py.File(path, "r") as h5:
        items = _items(h5)
        assert items, f"{path}: no patching items"
        kinds = {it["kind"] for it in items}
        assert kinds == {"minimal_pair", "causal_tracing"}, f"{path}: items of kinds {kinds} only (both experiments must be checked)"
        heads_ref = h5["patching/items/heads"][()] if "patching/items/heads" in h5 else None
        ablated_ref = h5["patching/items/ablated"][()] if "patching/items/ablated" in h5 else None
        source = h5["patching/pairs/source"].asstr()[0]
    # the minimal pairs are the world's: each (clean, corrupt) is the tokenisation of one val record's
    # minimal_pair (true, false)
    assert source == "world_minimal_pair", f"{path}: pairs from {source}, expected the world's minimal_pair"
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(model_dir))
    world = {}
    with open(_cache["world"] / "captions.jsonl") as f:
        for line in f:
            r = json.loads(line)
            mp = r.get("minimal_pair")
            if mp:
                world[(tuple(tok(mp["true"])["input_ids"]), tuple(tok(mp["false"])["input_ids"]))] = mp["template"]
    for it in items:
        if it["kind"] == "minimal_pair":
            key = (tuple(it["clean"]), tuple(it["corrupt"]))
            assert key in world, f"{path}: minimal-pair item {key} is no record's minimal_pair"
            assert world[key] == it["template"], f"{path}: template {it['template']} vs the record's {world[key]}"
        attn_ab = h5["patching/attention_ablation"][()] if "patching/attention_ablation" in h5 else None
        mlp_ab = h5["patching/mlp_ablation"][()] if "patching/mlp_ablation" in h5 else None
    worst = 0.0
    pairs = []
    for it in items:
        n = len(it["clean"])
        W = m.model.config.text_config.hidden_size
        _, cap = m.run(it["clean"], [], capture=True)
        s_clean = m.score(m.run(it["clean"], [])[0], it["image"])
        samples = list(it["noise"]) if it["noise"] is not None else [None]
        acc_dec, acc_res, acc_all = 0.0, np.zeros_like(it["restored"]), np.zeros_like(it["all_positions"])
        acc_heads = None
        for noise in samples:
            base = [(("resid", 0), range(n), slice(0, W), noise, True)] if noise is not None else []
            s_corrupt = m.score(m.run(it["corrupt"], base)[0], it["image"])
            acc_dec += s_clean - s_corrupt
            for l in range(m.L + 1):
                src = cap[("resid", l)]
                for r, rows in enumerate(it["roles"]):
                    e = base + [(("resid", l), rows, slice(0, W), src, False)]
                    acc_res[l, r] += m.score(m.run(it["corrupt"], e)[0], it["image"]) - s_corrupt
                e = base + [(("resid", l), range(n), slice(0, W), src, False)]
                acc_all[l] += m.score(m.run(it["corrupt"], e)[0], it["image"]) - s_corrupt
            if it["kind"] == "minimal_pair" and heads_ref is not None:
                d = W // m.heads
                acc_heads = np.zeros((m.L, m.heads))
                for k in range(m.L):
                    for h in range(m.heads):
                        e = [(("z", k), range(n), slice(h * d, (h + 1) * d), cap[("z", k)], False)]
                        acc_heads[k, h] = m.score(m.run(it["corrupt"], e)[0], it["image"]) - s_corrupt
        S = len(samples)
        for name, ours, ref in [("decision", it["decision"], acc_dec / S), ("restored", it["restored"], acc_res / S),
                                ("all_positions", it["all_positions"], acc_all / S)]:
            diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))
            worst = max(worst, diff)
            assert diff <= ATOL, f"{model_dir.name} {it['kind']} {name}: max|diff| {diff} (ours {ours}, transformers {ref})"
        if acc_heads is not None:
            pairs.append((it, cap))
            diff = float(np.max(np.abs(heads_ref[len(pairs) - 1] - acc_heads)))
            worst = max(worst, diff)
            assert diff <= ATOL, f"{model_dir.name} heads: max|diff| {diff}"
    # mean-ablation over the minimal pairs, as the ratio of means
    if pairs and attn_ab is not None:
        sums = {}
        rows = 0
        for it, _ in pairs:
            for ids in (it["clean"], it["corrupt"]):
                _, cap = m.run(ids, [], capture=True)
                rows += len(ids)
                for k in range(m.L):
                    for name in ("attn_out", "mlp_out"):
                        sums[(name, k)] = sums.get((name, k), 0) + cap[(name, k)].astype(np.float64).sum(0)
        means = {key: v / rows for key, v in sums.items()}
        def dec(it, edits_for):
            a = m.score(m.run(it["clean"], edits_for(len(it["clean"])))[0], it["image"])
            b = m.score(m.run(it["corrupt"], edits_for(len(it["corrupt"])))[0], it["image"])
            return a - b
        intacts = [dec(it, lambda n: []) for it, _ in pairs]
        for slot, (name, ref) in enumerate((("attn_out", attn_ab), ("mlp_out", mlp_ab))):
            for k in range(m.L):
                num = den = 0.0
                for j, ((it, _), intact) in enumerate(zip(pairs, intacts)):
                    ablated = dec(it, lambda n: [((name, k), range(n), slice(None), np.tile(means[(name, k)], (n, 1)), False)])
                    if ablated_ref is not None:
                        diff = abs(ablated_ref[j, k, slot] - ablated)
                        worst = max(worst, diff)
                        assert diff <= ATOL, f"{model_dir.name} {name} ablation block {k} pair {j}: ours {ablated_ref[j, k, slot]}, transformers {ablated}"
                    num += intact - ablated
                    den += intact
                diff = abs(num / den - ref[k, 0])
                worst = max(worst, diff)
                assert diff <= ATOL, f"{model_dir.name} {name} ablation block {k}: ours {ref[k, 0]}, transformers {num / den}"
    print(f"patching parity {model_dir.name}: {len(items)} items, max|diff| {worst:.2e} (tolerance {ATOL})")


def _estimates(values):
    """report.json estimates ({mean, low, high}; a non-finite value is null) as an [..., 3] array (NaN)."""
    if isinstance(values, dict):
        return np.array([np.nan if values.get(k) is None else values[k] for k in ("mean", "low", "high")], dtype=np.float64)
    return np.stack([_estimates(v) for v in values]) if values else np.zeros((0, 3))


def _same(name, ours, want):
    ours, want = np.asarray(ours, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert ours.shape == want.shape, f"{name}: shape {ours.shape} in probe-layers.h5, {want.shape} in report.json"
    # report.json writes a non-finite number as null; probe-layers.h5 keeps it (NaN or inf)
    finite = np.isfinite(ours)
    assert np.array_equal(finite, np.isfinite(want)), f"{name}: non-finite at other places: h5 {ours} vs report.json {want}"
    assert np.array_equal(ours[finite], want[finite]), f"{name}: h5 {ours} vs report.json {want}"


def test_reader_matches_report_json():
    """negclip_h5.ProbeLayers.patching() on the tiny run gives report.json's patching numbers exactly."""
    from negclip_h5 import open_probe_layers
    import plot_patching

    path = _report(ROOT / "Tests/Fixtures/tiny-clip")
    rep = json.loads((path.parent / "report.json").read_text())["patching"]
    with open_probe_layers(path) as f:
        p = f.patching()
        layers, roles, heat = f.patching_restored("minimal_pairs")
    assert p is not None and p["roles"] == rep["roles"]
    assert p["pairs"] == rep["pairs"], f"pairs: h5 {p['pairs']} vs report.json {rep['pairs']}"
    assert p["pairs"]["source"] == "world_minimal_pair" and p["pairs"]["used"] > 0, p["pairs"]
    checked = 0
    named = [(k, p["experiments"][k], rep[k]) for k in ("minimal_pairs", "causal_tracing") if rep.get(k) is not None]
    assert {k for k, _, _ in named} == set(p["experiments"]), f"experiments {set(p['experiments'])} vs report.json"
    assert set(p["slices"]) == set(rep["minimal_pair_slices"]) and p["slices"], f"slices {set(p['slices'])}"
    named += [(f"slice {k}", p["slices"][k], rep["minimal_pair_slices"][k]) for k in p["slices"]]
    for name, ours, want in named:
        _same(f"{name} restored", ours["restored"], np.stack([_estimates(want["restored"][r]) for r in rep["roles"]]))
        _same(f"{name} all_positions", ours["all_positions"], _estimates(want["all_positions"]))
        _same(f"{name} decision", ours["decision"], _estimates(want["decision"]))
        checked += ours["restored"].size + ours["all_positions"].size + 3
    for key in ("attention_ablation", "mlp_ablation"):
        if rep[key]:
            _same(key, p[key], _estimates(rep[key]))
            checked += p[key].size
    if rep["heads"]:
        _same("heads", p["heads"], np.stack([_estimates(row) for row in rep["heads"]]))
        checked += p["heads"].size
    # the heat map helper is the minimal pairs' means, [layer, role]
    _same("patching_restored", heat, p["experiments"]["minimal_pairs"]["restored"][:, :, 0].T)
    assert roles == rep["roles"] and layers == list(range(heat.shape[0]))
    png = path.parent / "patching.png"
    assert plot_patching.main([str(path), "--out", str(png)]) == 0 and png.stat().st_size > 0
    print(f"patching reader: {checked} numbers equal report.json's ({p['pairs']['used']} pairs from {p['pairs']['source']}, "
          f"{len(p['slices'])} slices)")


def test_patching_matches_transformers_tiny_clip():
    _check_model(ROOT / "Tests/Fixtures/tiny-clip")


def test_patching_matches_transformers_builtin_model():
    _check_model(ROOT / "models/negclip-mini")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
