"""scikit-learn on the probe fits `negclip-bench probe-fits` wrote: the same nested cross-validation
(per outer fold: the inner folds given, the C grid in ascending order with warm starts along the
path inside each inner training fold, the C of the best mean inner accuracy with ties to the
smaller C, then the refit on the outer training rows at that C) on exactly the same built features,
with LogisticRegression(solver="lbfgs", tol, max_iter) - the same objective and stopping rule.

    negclip-bench probe-fits --dump OUT/dump.h5 --data OUT/captions-val.jsonl --task truth --layer 6 --out /tmp/fits
    OPENBLAS_NUM_THREADS=1 python scripts/peers/probe_sklearn.py /tmp/fits

Prints one JSON object: seconds (fits only, reading excluded), the chosen C per fold and accuracy of
both, whether they agree, and the ratio sklearn seconds / swift seconds (> 1: Swift is faster).
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def nested_fold(xtr, ytr, xte, inner, grid, tol, max_iter):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    path = sorted(grid)
    not_converged = 0
    fits = 0
    scores = np.zeros(len(path))
    best = path[0]
    if len(path) > 1 and len(inner):
        inner = np.asarray(inner)
        ks = np.unique(inner)
        for j in ks:
            tr, va = inner != j, inner == j
            m = LogisticRegression(C=path[0], solver="lbfgs", tol=tol, max_iter=max_iter, warm_start=True)
            for ci, c in enumerate(path):
                m.set_params(C=c)
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always", ConvergenceWarning)
                    m.fit(xtr[tr], ytr[tr])
                fits += 1
                not_converged += any(issubclass(x.category, ConvergenceWarning) for x in w)
                scores[ci] += (m.predict(xtr[va]) == ytr[va]).mean()
        scores /= len(ks)
        best = path[int(np.argmax(scores))]   # first maximum: the smaller C on ties
    m = LogisticRegression(C=best, solver="lbfgs", tol=tol, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", ConvergenceWarning)
        m.fit(xtr, ytr)
    fits += 1
    not_converged += any(issubclass(x.category, ConvergenceWarning) for x in w)
    return m.predict(xte), best, scores, fits, not_converged, m


def main(argv):
    d = Path(argv[0])
    meta = json.loads((d / "meta.json").read_text())
    D = meta["d"]
    folds = []
    for f, fm in enumerate(meta["folds"]):
        xtr = np.fromfile(d / f"fold-{f}.train.f64", dtype="<f8").reshape(fm["train"], D)
        xte = np.fromfile(d / f"fold-{f}.test.f64", dtype="<f8").reshape(fm["test"], D)
        folds.append((xtr, np.array(fm["y_train"]), xte, np.array(fm["y_test"]), fm["inner"]))
    t0 = time.perf_counter()
    out = [nested_fold(xtr, ytr, xte, inner, meta["c_grid"], meta["tolerance"], meta["max_iterations"])
           for xtr, ytr, xte, _, inner in folds]
    seconds = time.perf_counter() - t0
    correct = sum(int((p == yte).sum()) for (p, *_), (_, _, _, yte, _) in zip(out, folds))
    n = sum(len(yte) for *_, yte, _ in folds)
    sk_c = [o[1] for o in out]
    sw_c = [fm["swift_c"] for fm in meta["folds"]]
    pred_agree = float(np.mean(np.concatenate([o[0] == np.array(fm["swift_predictions"]) for o, fm in zip(out, meta["folds"])])))
    result = {
        "task": meta["task"], "layer": meta["layer"], "items": meta["items"], "d": D, "classes": meta["classes"],
        "c_grid": meta["c_grid"], "tolerance": meta["tolerance"],
        "sklearn_seconds": seconds, "swift_seconds": meta["swift_seconds"],
        "ratio_sklearn_over_swift": seconds / meta["swift_seconds"] if meta["swift_seconds"] > 0 else None,
        "sklearn_accuracy": correct / n, "swift_accuracy": meta["swift_accuracy"],
        "sklearn_c": sk_c, "swift_c": sw_c, "c_equal": sk_c == sw_c, "prediction_agreement": pred_agree,
        "sklearn_fits": sum(o[3] for o in out), "sklearn_not_converged": sum(o[4] for o in out),
        "swift_fits": sum(fm["swift_fits"] for fm in meta["folds"]),
        "swift_not_converged": sum(fm["swift_not_converged"] for fm in meta["folds"]),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "swift_workers": meta["workers"],
        "load_average_1min": os.getloadavg()[0], "swift_load_average_1min": meta["load_average_1min"],
    }
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
