"""Activation patching of a `negclip probe-layers` report: heat maps layer x role of the fraction of the
decision restored (docs/probing.md, "Activation patching"; schema: docs/hdf5-schema.md, /patching).

    python plot_patching.py OUT/probe-layers.h5 [--out patching.png]

One panel per experiment present (minimal pairs, causal tracing): rows = hidden_states index (0 =
embeddings), columns = position role (negator, negated object, end of text), colour = fraction
restored (1 = the clean decision fully restored, 0 = nothing); and, when the report has them, a panel
of the per-block mean-ablation (fraction of the minimal-pair decision removed, attention and MLP).
Prints the numbers with their 95% intervals as a table, and where the pairs came from.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from negclip_h5 import DumpError, open_probe_layers

TITLES = {"minimal_pairs": "minimal pairs", "causal_tracing": "causal tracing"}


def table(p):
    """Rows (experiment, layer, role, mean, low, high) of every experiment and slice."""
    rows = []
    named = list(p["experiments"].items()) + [(f"slice {k}", v) for k, v in sorted(p["slices"].items())]
    for name, e in named:
        restored = e["restored"]  # [role, layer, 3]
        for layer in range(restored.shape[1]):
            for r, role in enumerate(p["roles"]):
                m, lo, hi = restored[r, layer]
                rows.append((name, layer, role, float(m), float(lo), float(hi)))
    return rows


def plot(p, out, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(TITLES.get(k, k), e["restored"][:, :, 0].T, p["roles"], "fraction restored")
              for k, e in p["experiments"].items()]
    if p["attention_ablation"] is not None and p["mlp_ablation"] is not None:
        ablation = np.stack([p["attention_ablation"][:, 0], p["mlp_ablation"][:, 0]], axis=1)  # [block, 2]
        panels.append(("mean-ablation per block", ablation, ["attention", "MLP"], "fraction removed"))
    if not panels:
        raise DumpError(f"{title}: /patching has no experiment to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5), squeeze=False)
    for ax, (name, values, columns, label) in zip(axes[0], panels):
        finite = values[np.isfinite(values)]
        bound = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        im = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, origin="lower")
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=30, ha="right")
        ax.set_ylabel("block" if label == "fraction removed" else "layer (hidden_states index)")
        ax.set_title(name)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe_layers", help="probe-layers.h5 of a `negclip probe-layers --out DIR` run")
    ap.add_argument("--out", default="patching.png")
    args = ap.parse_args(argv)
    try:
        with open_probe_layers(args.probe_layers) as f:
            p = f.patching()
    except DumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if p is None:
        print(f"error: {args.probe_layers}: no /patching group (the run had --no-patching, --patching-items 0, "
              "no model or no caption records)", file=sys.stderr)
        return 1
    pairs = p["pairs"]
    if pairs is not None:
        print(f"pairs from {pairs['source']}: {pairs['used']} used of {pairs['aligned']} aligned, {pairs['candidates']} candidates "
              f"(skipped {pairs['skipped_unequal_length']} unequal length, {pairs['skipped_roles']} roles, "
              f"{pairs['skipped_phrases']} phrases)")
    print(f"{'experiment':<32} {'layer':>5} {'role':<16} {'restored':>9} {'95% interval':>20}")
    for name, layer, role, m, lo, hi in table(p):
        print(f"{name:<32} {layer:>5} {role:<16} {m:>9.3f} [{lo:>8.3f}, {hi:>8.3f}]")
    try:
        plot(p, args.out, f"activation patching: {args.probe_layers}")
    except DumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
