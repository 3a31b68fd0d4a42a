"""Per-layer curves of a `negclip dump` file, or of a `negclip probe-layers` report.

    python plot_layers.py DUMP.h5 [--out layers.png]
    python plot_layers.py --probe-layers OUT/probe-layers.h5 [--out probe-layers.png]

With --probe-layers: one panel for the separation (trained and random-weights, with intervals) and
one per probe task (accuracy, random weights, control task, chance and bag-of-words lines); when the
file holds the sweep (schema 3), OUT-sweep.png beside it: the Pareto front of negation gain vs R@1
drop over every unit x rate, the WiSE-FT curve of the selected set and (thorough) the budget check.
and when the report has them, OUT-measures.png adds the standardised separation, the gradient predictors per block
and each measure's predictive validity; when the file has /probe_details, OUT-mdl.png: per probe task
the online code's compression per layer (trained, control task, random weights; 1 = the uniform
code) and the trained network's accuracy on the held-out-template slice beside the rest.

Plots, per stored layer (hidden_states index; 0 = embeddings), the mean cosine similarity between
each caption and its negation at the end-of-text token (pairs linked by /text/pair_ids, grouped
by label) with a 95% interval, and the mean norm of that row. Prints the numbers as a table too.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from negclip_h5 import DumpError, LABEL_NAMES, open_dump


def layer_table(dump):
    """Rows (layer, kind, n, mean cosine, 95% half-width, mean norm)."""
    labels = dump.labels()
    norms = dump.layer_norms()
    rows = []
    by_kind = {}
    for a, b in dump.pairs():
        by_kind.setdefault(LABEL_NAMES[labels[b]], []).append((a, b))
    for kind, pairs in sorted(by_kind.items()):
        cos = dump.pair_cosines(pairs)
        for layer in dump.layers:
            c = cos[layer]
            half = 1.96 * c.std(ddof=1) / np.sqrt(len(c)) if len(c) > 1 else float("nan")
            rows.append((layer, kind, len(c), float(c.mean()), float(half), norms[layer]))
    if not rows:
        rows = [(layer, "none", 0, float("nan"), float("nan"), norms[layer]) for layer in dump.layers]
    return rows


def plot(rows, layers, out, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in sorted({r[1] for r in rows if r[2] > 0}):
        rs = [r for r in rows if r[1] == kind]
        x = [r[0] for r in rs]
        m = np.array([r[3] for r in rs])
        h = np.array([r[4] for r in rs])
        ax1.plot(x, m, marker="o", label=f"{kind} (n={rs[0][2]})")
        ax1.fill_between(x, m - h, m + h, alpha=0.2)
    ax1.set_xlabel("layer (hidden_states index, 0 = embeddings)")
    ax1.set_ylabel("cos(caption, negation) at end-of-text")
    ax1.set_title("caption vs negation")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend()
    norms = {r[0]: r[5] for r in rows}
    ax2.plot(layers, [norms[l] for l in layers], marker="o", color="gray")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("mean ||h_eos||")
    ax2.set_title("residual-stream norm")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_probe_layers(path, out):
    """Separation and probe curves of probe-layers.h5 (docs/hdf5-schema.md)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from negclip_h5 import open_probe_layers

    with open_probe_layers(path) as r:
        tasks = r.probe_tasks()
        kinds = list(r.file["separation"]) if "separation" in r.file else []
        fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(4.5 * (1 + len(tasks)), 3.8), squeeze=False)
        x = np.array(r.layers)

        def band(ax, arr, label, style="-"):
            ax.plot(x, arr[:, 0], style, marker="o", label=label)
            ax.fill_between(x, arr[:, 1], arr[:, 2], alpha=0.2)

        ax = axes[0][0]
        for kind in kinds:
            s = r.separation(kind)
            band(ax, s["model"], f"{kind}")
            if "random" in s:
                band(ax, s["random"], f"{kind} (random weights)", "--")
        ax.set_title("cos(caption, negation), end-of-text")
        ax.set_xlabel("layer (hidden_states index)")
        if kinds:
            ax.legend(fontsize=7)
        for ax, task in zip(axes[0][1:], tasks):
            p = r.probe(task)
            band(ax, p["model"], "trained")
            if "random" in p:
                band(ax, p["random"], "random weights", "--")
            band(ax, p["control"], "control task", ":")
            ax.axhline(p["chance"], color="k", lw=0.8, ls=":", label="chance")
            ax.axhline(p["bag_of_words"][0], color="tab:orange", lw=0.8, ls="--", label="bag of words")
            ax.set_title(f"probe {task}")
            ax.set_xlabel("layer (hidden_states index)")
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7)
        a = r.attrs
        fig.suptitle(f"{path}  model {a['model_sha256'][:12]}  data {a['data_sha256'][:12]}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)


def plot_probe_details(path, out):
    """MDL compression per layer and the tagged slices of each probe task (/probe_details); False
    when the file has none."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from negclip_h5 import open_probe_layers
    from probe_h5_extras import probe_details

    with open_probe_layers(path) as r:
        details = {t: probe_details(r.file, t) for t in r.probe_tasks()}
        details = {t: d for t, d in details.items() if d}
        if not details:
            return False
        x = np.array(r.layers)
        fig, axes = plt.subplots(2, len(details), figsize=(4.5 * len(details), 7), squeeze=False)
        for j, (task, d) in enumerate(details.items()):
            ax = axes[0][j]
            for net, style in (("model", "-"), ("control", ":"), ("random", "--")):
                if net in d.get("mdl", {}):
                    ax.plot(x, d["mdl"][net]["compression"], style, marker="o", label=net if net != "model" else "trained")
            ax.axhline(1, color="k", lw=0.8, ls=":", label="uniform code")
            ax.set_title(f"MDL {task}")
            ax.set_xlabel("layer (hidden_states index)")
            ax.set_ylabel("compression (uniform / online bits)")
            ax.legend(fontsize=7)
            ax = axes[1][j]
            for tag, s in sorted(d.get("slices", {}).items()):
                for key, style in (("model", "-"), ("rest", "--")):
                    arr = s[key]
                    label = f"{tag} ({int(s['items'][0])})" if key == "model" else f"rest ({int(s['items'][1])})"
                    ax.plot(x, arr[:, 0], style, marker="o", label=label)
                    ax.fill_between(x, arr[:, 1], arr[:, 2], alpha=0.2)
            if "baselines" in d:
                for name, color in (("last_object", "tab:brown"), ("negator", "tab:pink")):
                    ax.axhline(d["baselines"][name][0], color=color, lw=0.8, ls="-.", label=name)
            ax.set_title(f"probe {task}: slices")
            ax.set_xlabel("layer (hidden_states index)")
            ax.set_ylabel("accuracy (trained)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return True


def plot_sweep(path, out):
    """The Pareto front of (R@1 drop, negation gain) over every unit x rate, the WiSE-FT curve of the
    chosen set and (thorough mode) the budget check, from probe-layers.h5 (schema 3). Returns False
    when the file has no sweep effects."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from negclip_h5 import open_probe_layers

    with open_probe_layers(path) as r:
        eff, sel, check = r.sweep_effects(), r.selection(), r.budget_check()
    if eff is None:
        return False
    panels = 1 + (sel is not None and sel["wise"] is not None) + (check is not None and "unit" in check)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    x, y = eff["retrieval_drop"] * 100, eff["negation_gain"] * 100
    front = eff["on_front"] > 0
    ax.errorbar(x[~front, 0], y[~front, 0], xerr=[x[~front, 0] - x[~front, 1], x[~front, 2] - x[~front, 0]],
                yerr=[y[~front, 0] - y[~front, 1], y[~front, 2] - y[~front, 0]], fmt="o", color="0.6", label="unit x rate")
    order = np.argsort(x[front, 0])
    ax.errorbar(x[front, 0][order], y[front, 0][order], fmt="o-", color="C0", label="Pareto front")
    for i in np.where(front)[0]:
        ax.annotate(f"{eff['unit'][i]} @ {eff['learning_rate'][i]:g}", (x[i, 0], y[i, 0]), fontsize=7)
    if sel is not None:
        ax.axvline(sel["bound"] * 100, color="C3", ls="--", label=f"bound {sel['bound'] * 100:.1f} points")
        ax.set_title(f"selected: {sel['unit']} at lr {sel['learning_rate']:g} ({sel['policy']})")
    ax.set_xlabel("R@1 drop, larger of t2i and i2t (points)")
    ax.set_ylabel("negation gain (points)")
    ax.legend(fontsize=7)
    k = 1
    if sel is not None and sel["wise"] is not None:
        ax = axes[0][k]; k += 1
        w = sel["wise"]
        for key, label, color in [("negation_gain", "negation gain", "C2"), ("retrieval_drop", "R@1 drop", "C3")]:
            v = w[key] * 100
            ax.plot(w["alpha"], v[:, 0], "o-", color=color, label=label)
            ax.fill_between(w["alpha"], v[:, 1], v[:, 2], color=color, alpha=0.15)
        ax.axhline(sel["bound"] * 100, color="C3", ls=":", label="bound")
        if np.isfinite(sel["wise_alpha"]):
            ax.axvline(sel["wise_alpha"], color="k", ls="--", label=f"chosen alpha {sel['wise_alpha']:g}")
        ax.set_xlabel("alpha: (1 - alpha) base + alpha fine-tuned")
        ax.set_ylabel("points")
        ax.set_title(f"WiSE-FT of {sel['unit']}")
        ax.legend(fontsize=7)
    if check is not None and "unit" in check:
        ax = axes[0][k]
        g = check["negation_gain"] * 100
        ax.errorbar(g[:, 0, 0], g[:, 1, 0], fmt="o", color="C4")
        for i, u in enumerate(check["unit"]):
            ax.annotate(u, (g[i, 0, 0], g[i, 1, 0]), fontsize=7)
        lo, hi = np.nanmin(g[:, :, 0]), np.nanmax(g[:, :, 0])
        ax.plot([lo, hi], [lo, hi], ":", color="0.5")
        steps, rho = check["steps"], check["rho"][2]
        ax.set_xlabel(f"negation gain at {int(steps[0])} steps (points)")
        ax.set_ylabel(f"negation gain at {int(steps[1])} steps (points)")
        ax.set_title(f"budget check: rho {rho[0]:.2f} [{rho[1]:.2f}, {rho[2]:.2f}]")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def plot_measures(path, out):
    """Standardised separation (trained vs random weights), the gradient predictors per block and each
    measure's predictive validity (rho with the sweep's negation gain, 95% interval), when the report
    has them; returns False when it has none."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from negclip_h5 import open_probe_layers

    with open_probe_layers(path) as r:
        kinds = list(r.file["separation_baselines"]) if "separation_baselines" in r.file else []
        grads, val = r.gradients(), r.validity()
        if not kinds and not grads and not val:
            return False
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), squeeze=False)
        x = np.array(r.layers)
        ax = axes[0][0]
        for kind in kinds:
            b = r.separation_baselines(kind)
            for key, style in [("model/standardised", "-"), ("random/standardised", "--")]:
                if key in b:
                    ax.plot(x, b[key][:, 0], style, marker="o", label=f"{kind} {key.split('/')[0]}")
                    ax.fill_between(x, b[key][:, 1], b[key][:, 2], alpha=0.2)
        ax.set_title("standardised separation z (lower = more separated)")
        ax.set_xlabel("layer (hidden_states index)")
        if kinds:
            ax.legend(fontsize=7)
        ax = axes[0][1]
        if grads:
            blocks = [i for i, g in enumerate(grads["group"]) if g.startswith("block.")]
            k = np.arange(len(blocks))
            for key, color in [("rgn", "tab:blue"), ("fisher", "tab:red")]:
                v = grads[key][blocks]
                scale = np.nanmax(v[:, 0]) or 1.0
                ax.errorbar(k, v[:, 0] / scale, yerr=[(v[:, 0] - v[:, 1]) / scale, (v[:, 2] - v[:, 0]) / scale],
                            marker="o", color=color, label=f"{key} (/ max {scale:.3g})")
            ax.legend(fontsize=7)
        ax.set_title("gradient predictors at the base model")
        ax.set_xlabel("block")
        ax = axes[0][2]
        if val:
            rho = val["rho/negation"]
            y = np.arange(len(val["measure"]))
            colors = ["tab:green" if p else "tab:gray" for p in val["predicts"]]
            ax.barh(y, rho[:, 0], color=colors)
            ax.errorbar(rho[:, 0], y, xerr=[rho[:, 0] - rho[:, 1], rho[:, 2] - rho[:, 0]], fmt="none", ecolor="k", lw=0.8)
            ax.set_yticks(y)
            ax.set_yticklabels(val["measure"], fontsize=6)
            ax.axvline(0, color="k", lw=0.8)
        ax.set_title("Spearman rho with the sweep's negation gain")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", nargs="?", help="HDF5 file written by `negclip dump`")
    p.add_argument("--probe-layers", help="plot a probe-layers.h5 (written by `negclip probe-layers`) instead")
    p.add_argument("--out", default="layers.png", help="PNG to write (default: layers.png)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.probe_layers:
        sweep_out = args.out[:-4] + "-sweep.png" if args.out.endswith(".png") else args.out + "-sweep.png"
        try:
            plot_probe_layers(args.probe_layers, args.out)
            swept = plot_sweep(args.probe_layers, sweep_out)
            measures = args.out.rsplit(".", 1)[0] + "-measures.png"
            if plot_measures(args.probe_layers, measures):
                print(f"wrote {measures}", file=sys.stderr)
            mdl = args.out.rsplit(".", 1)[0] + "-mdl.png"
            if plot_probe_details(args.probe_layers, mdl):
                print(f"wrote {mdl}", file=sys.stderr)
        except DumpError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {args.out}" + (f" and {sweep_out}" if swept else ""), file=sys.stderr)
        return 0
    if not args.dump:
        p.error("give a dump file or --probe-layers FILE")
    try:
        with open_dump(args.dump) as d:
            rows = layer_table(d)
            print("layer kind n mean_cos ci95 mean_norm")
            for r in rows:
                print(f"layer {r[0]} {r[1]} {r[2]} {r[3]:.4f} {r[4]:.4f} {r[5]:.3f}")
            if not args.no_plot:
                a = d.attrs
                plot(rows, d.layers, args.out, f"{args.dump}  model {a['model_weights_sha256'][:12]}  "
                     f"data {a['dataset_sha256'][:12]}")
                print(f"wrote {args.out}", file=sys.stderr)
    except DumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
