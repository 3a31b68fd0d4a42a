"""Checks of `negclip probe-layers` (Sources/Probing) against scikit-learn and planted signals.

* Probe math: `negclip-bench probe-parity` fits the L2 logistic regression (binomial and multinomial)
  on standardised features; scikit-learn's LogisticRegression(C, solver="lbfgs") on the same
  features must give the same coefficients (max|diff| <= 1e-4 max|coef|). The nested
  cross-validation on the same outer and inner folds and C grid (0.01, 0.1, 1, 10) must choose the
  same C in every outer fold, give the same inner accuracies and the same out-of-fold correctness of
  every item (accuracies equal), with refit coefficients within 1e-4 of max|coef|.
* Planted signal: a real dump of the tiny CLIP fixture on a small world, whose /text/hidden_states
  are rewritten with h5py so that the label is linearly decodable only at layers 1 and 3; the probe
  ranking must put exactly those first, and the control task must show low selectivity elsewhere.
* End to end (records mode on the tiny CLIP + a small world): report.json, probe-layers.h5 and
  report.md agree number for number, rankings are permutations of 0..L, the SVGs render (cairosvg).

The Swift build must exist (scripts/test.sh builds first). Runs under pytest or as a plain script.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = os.environ.get("NEGCLIP_SCRATCH_PATH", ".build")
_cache: dict = {}


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def _bin(name):
    if "bindir" not in _cache:
        _cache["bindir"] = Path(_run(["swift", "build", "--scratch-path", SCRATCH, "--show-bin-path"]).strip())
    path = _cache["bindir"] / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    return path


def _workdir():
    if "work" not in _cache:
        _cache["work"] = Path(tempfile.mkdtemp(prefix="negclip-probe-"))
    return _cache["work"]


def _world():
    """A small synthetic world (make-world --size 200)."""
    if "world" not in _cache:
        out = _workdir() / "world"
        _run([_bin("negclip"), "make-world", "--out", out, "--seed", "3", "--size", "200"])
        _cache["world"] = out
    return _cache["world"]


# ---------------------------------------------------------------------------------------------
# probe math vs scikit-learn

def _sklearn_nested(x, y, folds, inner_folds, grid, tol):
    """scikit-learn's nested CV on the given outer and inner folds: StandardScaler on the outer
    training rows (shared by the inner folds, as the Swift probe does), the C path ascending with
    warm starts inside each inner training fold, the best mean inner accuracy (ties: smaller C,
    GridSearchCV's first best), the refit at that C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    path = sorted(grid)
    out = []
    i = 0
    for fold in folds:
        fold = np.array(fold)
        correct = np.zeros(len(y))
        for f in np.unique(fold):
            tr, te = fold != f, fold == f
            sc = StandardScaler().fit(x[tr])
            xtr, ytr, xte = sc.transform(x[tr]), y[tr], sc.transform(x[te])
            inner = np.array(inner_folds[i])
            i += 1
            scores = np.zeros(len(path))
            if len(path) > 1:
                for j in np.unique(inner):
                    itr, iva = inner != j, inner == j
                    m = LogisticRegression(C=path[0], solver="lbfgs", tol=tol, max_iter=100000, warm_start=True)
                    for ci, c in enumerate(path):
                        m.set_params(C=c).fit(xtr[itr], ytr[itr])
                        scores[ci] += (m.predict(xtr[iva]) == ytr[iva]).mean()
                scores /= len(np.unique(inner))
            best = path[int(np.argmax(scores))]
            m = LogisticRegression(C=best, solver="lbfgs", tol=tol, max_iter=100000).fit(xtr, ytr)
            correct[te] = m.predict(xte) == y[te]
            out.append((best, scores, m))
        yield correct, out
        out = []


def _parity(x, y, groups, c, grid=(0.01, 0.1, 1.0, 10.0)):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    work = _workdir()
    inp, out = work / "parity-in.json", work / "parity-out.json"
    tol = 1e-8
    inp.write_text(json.dumps({"x": x.tolist(), "y": y.tolist(), "groups": groups.tolist(), "c": c,
                               "c_grid": list(grid), "folds": 5, "seeds": [0, 1], "tolerance": tol}))
    _run([_bin("negclip-bench"), "probe-parity", "--input", inp, "--out", out])
    swift = json.loads(out.read_text())

    xs = StandardScaler().fit_transform(x)
    ref = LogisticRegression(C=c, solver="lbfgs", tol=1e-10, max_iter=20000).fit(xs, y)
    coef = np.array(swift["coef"])
    assert coef.shape == ref.coef_.shape, (coef.shape, ref.coef_.shape)
    scale = np.abs(ref.coef_).max()
    diff = np.abs(coef - ref.coef_).max()
    assert diff <= 1e-4 * max(scale, 1.0), f"coef max|diff| {diff} (max|coef| {scale})"
    assert np.abs(np.array(swift["intercept"]) - ref.intercept_).max() <= 1e-4 * max(np.abs(ref.intercept_).max(), 1.0)

    # folds keep pairs together: no group on both sides
    for folds in swift["folds"]:
        for g in np.unique(groups):
            assert len(set(np.array(folds)[groups == g])) == 1
    # nested CV on the same outer and inner folds and C grid, both at gradient tolerance 1e-8:
    # the same C in every outer fold, the same inner accuracies, the same out-of-fold predictions,
    # refit coefficients within 1e-4 of max |coef|
    k = len(set(swift["folds"][0]))
    correct = np.zeros(len(y))
    chosen, inner_acc, fold_models = [], [], []
    for seed_correct, fold_out in _sklearn_nested(x, y, swift["folds"], swift["inner_folds"], grid, tol):
        correct += seed_correct
        for best, scores, m in fold_out:
            chosen.append(best)
            inner_acc.append(scores)
            fold_models.append(m)
    correct /= len(swift["folds"])
    assert chosen == swift["c_per_fold"], (chosen, swift["c_per_fold"])
    np.testing.assert_allclose(np.mean(inner_acc, axis=0), swift["inner_accuracy"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(correct, np.array(swift["cv_correct"]))
    assert float(correct.mean()) == swift["cv_accuracy"] or abs(float(correct.mean()) - swift["cv_accuracy"]) <= 1e-12
    for m, sc, si in zip(fold_models, swift["fold_coef"], swift["fold_intercept"]):
        sc = np.array(sc)
        scale = max(np.abs(m.coef_).max(), 1.0)
        assert np.abs(sc - m.coef_).max() <= 1e-4 * scale, f"fold coef max|diff| {np.abs(sc - m.coef_).max()} (max|coef| {scale})"
        assert np.abs(np.array(si) - m.intercept_).max() <= 1e-4 * max(np.abs(m.intercept_).max(), 1.0)
    assert swift["not_converged"] == 0, swift["not_converged"]
    assert k == 5
    return swift, ref


def test_logistic_regression_matches_sklearn_binary():
    rng = np.random.default_rng(0)
    n, d = 300, 12
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    w = rng.normal(size=d)
    y = (x @ w + rng.normal(scale=2.0, size=n) > np.median(x @ w)).astype(int)
    groups = np.arange(n) // 2
    _parity(x, y, groups, c=0.5)


def test_logistic_regression_matches_sklearn_multinomial():
    rng = np.random.default_rng(1)
    n, d, k = 400, 10, 4
    centers = rng.normal(scale=1.2, size=(k, d))
    y = rng.integers(0, k, size=n)
    x = centers[y] + rng.normal(size=(n, d))
    groups = np.arange(n) // 3
    swift, ref = _parity(x, y, groups, c=1.0)
    assert np.array(swift["coef"]).shape == (k, d)


# ---------------------------------------------------------------------------------------------
# planted signal in a dump rewritten by h5py

def _dump():
    if "dump" not in _cache:
        world = _world()
        out = _workdir() / "dump.h5"
        _run([_bin("negclip"), "dump", "--model", ROOT / "Tests/Fixtures/tiny-clip",
              "--data", world / "captions.jsonl", "--out", out])
        _cache["dump"] = out
    return _cache["dump"]


def test_planted_signal_ranks_exactly_the_planted_layers():
    src = _dump()
    planted = _workdir() / "planted.h5"
    planted.write_bytes(src.read_bytes())
    signal_layers = {1, 3}
    rng = np.random.default_rng(7)
    with h5py.File(planted, "r+") as f:
        labels = f["text/labels"][:]
        layers = [int(v) for v in f["text/layer"][:]]
        hs = f["text/hidden_states"]
        n, w = hs.shape[1], hs.shape[2]
        direction = rng.normal(size=(3, w))
        for k, l in enumerate(layers):
            x = rng.normal(size=(n, w)).astype(np.float32)
            if l in signal_layers:
                x += 1.5 * direction[np.clip(labels, 0, 2)].astype(np.float32)
            hs[k] = x
    out = _workdir() / "planted-report"
    _run([_bin("negclip"), "probe-layers", "--dump", planted, "--out", out, "--no-random", "--no-sweep", "--seeds", "0",
          "--bootstrap", "200"])
    report = json.loads((out / "report.json").read_text())
    ranking = report["rankings"]["probe.dump_label"]
    assert set(ranking[:2]) == signal_layers, ranking
    probe = next(p for p in report["probes"] if p["task"]["name"] == "dump_label")
    for l in range(len(report["layers"])):
        acc = probe["model"][l]["mean"]
        if l in signal_layers:
            assert acc > 0.9, (l, acc)
            assert probe["selectivity"][l] > 0.3, (l, probe["selectivity"][l])
        else:
            assert acc < probe["chance"] + 0.1, (l, acc, probe["chance"])
            assert abs(probe["selectivity"][l]) < 0.15, (l, probe["selectivity"][l])


# ---------------------------------------------------------------------------------------------
# end to end: the report's files agree

def _report():
    # NEGCLIP_PROBE_REPORT=DIR checks an existing report folder instead (e.g. the default run on the
    # built-in model: `negclip probe-layers --out DIR`), as docs/probing.md describes.
    if os.environ.get("NEGCLIP_PROBE_REPORT"):
        return Path(os.environ["NEGCLIP_PROBE_REPORT"])
    if "report" not in _cache:
        out = _workdir() / "report"
        _run([_bin("negclip"), "probe-layers", "--model", ROOT / "Tests/Fixtures/tiny-clip", "--data",
              _world() / "captions.jsonl", "--split", "train", "--out", out, "--tasks", ROOT / "probes",
              "--seeds", "0", "--folds", "3", "--bootstrap", "200", "--max-iterations", "50", "--no-sweep",
              # named: negated and negation_kind are off by default (surface-solvable), kept here for
              # the word-detection and the image-paired report formats
              "--task", "negated", "--task", "negated_object_minimal", "--task", "negation_kind", "--task", "truth_minimal"])
        _cache["report"] = out
    return _cache["report"]


def _close(a, b, tol):
    if a is None or b is None or (isinstance(b, float) and np.isnan(b)):
        return (a is None or np.isnan(a)) and (b is None or np.isnan(b))
    return abs(a - b) <= tol


def test_report_files_agree():
    out = _report()
    report = json.loads((out / "report.json").read_text())

    def sorted_keys(o, where="$"):
        if isinstance(o, dict):
            assert list(o) == sorted(o), f"report.json {where}: keys not sorted"
            for k, v in o.items():
                sorted_keys(v, f"{where}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                sorted_keys(v, f"{where}[{i}]")
    sorted_keys(report)
    n = len(report["layers"])
    assert report["layers"][0] == {"index": 0, "name": "hidden_states[0]", "hook": "text.blocks.0.hook_resid_pre"}
    assert report["layers"][2] == {"index": 2, "name": "hidden_states[2]", "hook": "text.blocks.1.hook_resid_post"}
    for key, order in report["rankings"].items():
        assert sorted(order) == list(range(n)), (key, order)
    assert "combined" in report["rankings"]
    assert len(report["combined_score"]) == n and all(0 <= s <= 1 for s in report["combined_score"])
    assert report["format"] == "negclip.probe-layers-report v3"
    prov = report["provenance"]
    # exactly the shared Provenance record; the run's other facts are in "inputs"
    assert sorted(prov) == ["command_line", "created_utc", "data", "data_sha256", "layer_definition", "model",
                            "model_sha256", "seeds", "tool", "tool_version"], sorted(prov)
    for k in ("model_sha256", "data_sha256", "seeds", "layer_definition", "command_line", "tool_version"):
        assert prov[k] not in (None, ""), k
    assert prov["tool"] == "negclip" and prov["tool_version"] == "0.1.0", prov
    assert report["inputs"]["model_config_sha256"], report["inputs"]

    def no_camel_case(o, where="$"):
        if isinstance(o, dict):
            for k, v in o.items():
                assert k.startswith("probe.") or k == k.lower(), f"report.json {where}.{k}: expected snake_case"
                no_camel_case(v, f"{where}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                no_camel_case(v, f"{where}[{i}]")
    no_camel_case({k: v for k, v in report.items() if k != "ranking_rules"})
    tasks = {p["task"]["name"] for p in report["probes"]}
    # the tasks named in _report; a default run (NEGCLIP_PROBE_REPORT) has the default ones
    # (negated, negation_kind, truth and negated_object are default: false)
    named = {"negated_object_minimal", "truth_minimal"} | (set() if os.environ.get("NEGCLIP_PROBE_REPORT") else {"negated", "negation_kind"})
    assert named <= tasks, tasks

    md = (out / "report.md").read_text()
    with h5py.File(out / "probe-layers.h5", "r") as f:
        assert f.attrs["schema"] == "negclip.probe_layers"
        assert int(f.attrs["schema_version"]) == 3
        assert f.attrs["tool"] == "negclip" and f.attrs["tool_version"] == "0.1.0"
        assert list(f["layers/hook"].asstr()[:]) == [l["hook"] for l in report["layers"]]
        np.testing.assert_allclose(f["combined_score"][:], report["combined_score"], rtol=0, atol=1e-12)
        for key, order in report["rankings"].items():
            assert [int(v) for v in f[f"rankings/{key}"][:]] == order
        for name, sep in report["separation"].items():
            h = f[f"separation/{name}/model"][:]
            for l in range(n):
                e = sep["model"][l]
                assert _close(e["mean"], h[l, 0], 1e-12) and _close(e["low"], h[l, 1], 1e-12)
                # the Markdown table shows the same number rounded to 3 decimals
                assert f"| {l} | {e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" in md
        for p in report["probes"]:
            if p.get("unavailable") is not None:
                continue
            g = f[f"probes/{p['task']['name']}"]
            for part in ("model", "random", "control", "gain_over_random"):
                h = g[part][:]
                for l in range(n):
                    assert _close(p[part][l]["mean"], h[l, 0], 1e-12), (p["task"]["name"], part, l)
            assert _close(p["chance"], g["chance"][0], 1e-12)
            for l in range(n):
                m, r = p["model"][l], p["random"][l]
                assert f"| {l} | {m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}] | {r['mean']:.3f} [" in md
            assert f"chance (majority class) **{p['chance']:.3f}**" in md
            # /probe_details (docs/hdf5-schema.md): chosen C, MDL, surface baselines, tagged slices
            d = f[f"probe_details/{p['task']['name']}"]
            for net, fits in p.get("fits", {}).items():
                if net == "bag_of_words":
                    continue
                h = d[f"c/{net}"][:]
                for l in range(n):
                    assert _close(fits[l]["c"] if fits[l] else None, h[l], 0), (p["task"]["name"], net, l)
            for net, mdl in p.get("mdl", {}).items():
                h = d[f"mdl/{net}/compression"][:]
                for l in range(n):
                    assert _close(mdl[l]["compression"] if mdl[l] else None, h[l], 1e-12), (p["task"]["name"], net, l)
            if p.get("baselines"):
                for name in ("bag_of_words", "last_object", "negator"):
                    assert _close(p["baselines"][name]["mean"], d[f"baselines/{name}"][0], 1e-12)
            assert int(d["convergence"][0]) == p["convergence"]["fits"]
            for tag, sl in p.get("slices", {}).items():
                h = d[f"slices/{tag}/model"][:]
                for l in range(n):
                    assert _close(sl["model"][l]["mean"], h[l, 0], 1e-12), (p["task"]["name"], tag, l)
                assert f"Slice `{tag}` ({sl['items']} items)" in md


def test_svgs_render_and_html_is_self_contained():
    import cairosvg  # installed by scripts/python_checks.sh (needs Debian libcairo2)
    out = _report()
    svgs = sorted(out.glob("*.svg"))
    assert {"separation.svg", "combined.svg", "probe-negated.svg"} <= {s.name for s in svgs}
    for s in svgs:
        png = cairosvg.svg2png(url=str(s))
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, s
    html = (out / "report.html").read_text()
    assert html.count("<svg") == len(svgs)
    assert not re.search(r"<img|src=\"", html), "report.html refers to external files"


def test_notebooks_export_reads_probe_layers_h5():
    sys.path.insert(0, str(ROOT / "notebooks-export"))
    import negclip_h5  # noqa: E402

    out = _report()
    report = json.loads((out / "report.json").read_text())
    with negclip_h5.open_probe_layers(out / "probe-layers.h5") as r:
        assert r.layers == list(range(len(report["layers"])))
        sep = r.separation("presence")
        np.testing.assert_allclose(sep["model"][:, 0], [e["mean"] for e in report["separation"]["presence"]["model"]])
        assert set(r.probe_tasks()) == {p["task"]["name"] for p in report["probes"] if p.get("unavailable") is None}
    import probe_h5_extras  # noqa: E402
    with negclip_h5.open_probe_layers(out / "probe-layers.h5") as r:
        for p in report["probes"]:
            if p.get("unavailable") is None and p.get("mdl", {}).get("model"):
                d = probe_h5_extras.probe_details(r.file, p["task"]["name"])
                want = [m["compression"] if m else np.nan for m in p["mdl"]["model"]]
                np.testing.assert_allclose(d["mdl"]["model"]["compression"], want)
    import plot_layers  # noqa: E402
    png = _workdir() / "probe.png"
    plot_layers.main(["--probe-layers", str(out / "probe-layers.h5"), "--out", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (_workdir() / "probe-mdl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_heat_map_and_layers_json_round_trip_into_train():
    """probe-layers with the sweep on (a short one) and --policy top-k: the sweep rankings map block k
    to layer k+1, the heat map and the Pareto front render, layers.json holds the blocks with the
    largest measured negation gains, probe-layers.h5 keeps the effects, runs and selection, the
    notebooks-export reader plots them, and layers.json drives `negclip train --layers`."""
    import cairosvg  # installed by scripts/python_checks.sh
    sys.path.insert(0, str(ROOT / "notebooks-export"))
    import negclip_h5
    import plot_layers

    out = _workdir() / "report-sweep"
    _run([_bin("negclip"), "probe-layers", "--model", ROOT / "Tests/Fixtures/tiny-clip", "--data",
          _world() / "captions.jsonl", "--out", out, "--tasks", ROOT / "probes", "--task", "truth",
          "--seeds", "0", "--folds", "3", "--bootstrap", "100", "--sweep-steps", "2", "--sweep-seeds", "0",
          "--policy", "top-k", "--k", "2", "--bound", "1"])
    report = json.loads((out / "report.json").read_text())
    n = len(report["layers"])
    windows = {w["window"]: w for w in report["sweep"]["windows"]}
    for k in range(n - 1):
        assert windows[f"block.{k}"]["layer"] == k + 1
    gains = {windows[f"block.{k}"]["layer"]: windows[f"block.{k}"]["gain"]["absence"]["mean"] for k in range(n - 1)}
    best = max(gains.values())
    assert report["rankings"]["sweep.absence"][0] in {l for l, g in gains.items() if g == best}
    assert report["rankings"]["sweep.absence"][-1] == 0 or 0 not in gains
    assert "sweep.absence" in report["combined_of"] and "sweep.presence" in report["combined_of"]
    effects = report["sweep"]["effects"]
    with h5py.File(out / "probe-layers.h5", "r") as f:
        assert list(f["sweep/window"].asstr()[:]) == [w["window"] for w in report["sweep"]["windows"]]
        assert list(f["sweep/effects/unit"].asstr()[:]) == [e["unit"] for e in effects]
        np.testing.assert_allclose(f["sweep/effects/negation_gain"][:, 0], [e["negation_gain"]["mean"] for e in effects], rtol=0, atol=1e-12)
        # one loss curve per run (unit x rate x seed); NaN past a run's recorded steps
        assert f["sweep/runs/losses"].shape[0] == sum(len(e["seeds"]) for e in effects)
        assert f["sweep/runs/metrics"].shape == (sum(len(e["seeds"]) for e in effects), 4)
        assert list(f["selection/blocks"][:]) == report["selection"]["blocks"]
    for svg in ["sweep-heatmap.svg", "pareto.svg"]:
        png = cairosvg.svg2png(url=str(out / svg))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with negclip_h5.open_probe_layers(out / "probe-layers.h5") as r:
        sel = r.selection()
        assert sel["policy"] == "top-k" and sel["blocks"] == report["selection"]["blocks"]
        assert r.sweep_effects()["on_front"].sum() >= 1
    assert plot_layers.plot_sweep(out / "probe-layers.h5", str(out / "sweep.png"))
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    layers = json.loads((out / "layers.json").read_text())
    assert layers["format"] == "negclip.layers v3" and layers["policy"]["name"] == "top-k"
    singles = {e["blocks"][0]: e["negation_gain"]["mean"] for e in effects if e["blocks"] and e["unit"] == f"block.{e['blocks'][0]}"}
    chosen = layers["blocks"]
    assert len(chosen) == 2 and min(singles[b] for b in chosen) >= max(g for b, g in singles.items() if b not in chosen)
    assert layers["groups"] == [f"block.{b}" for b in chosen]
    run = _workdir() / "train-from-layers"
    _run([_bin("negclip"), "train", "--model", ROOT / "Tests/Fixtures/tiny-clip", "--data", _world() / "captions.jsonl",
          "--layers", out / "layers.json", "--steps", "1", "--batch", "4", "--warmup", "0", "--out", run])
    state = json.loads(next(run.glob("checkpoint-*/trainer_state.json")).read_text())
    assert sorted(state["trainable_groups"]) == sorted(layers["groups"]), (state["trainable_groups"], layers["groups"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
