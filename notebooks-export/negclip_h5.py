"""Read a `negclip dump` HDF5 file (schema: docs/hdf5-schema.md) with h5py and numpy.

    from negclip_h5 import open_dump
    with open_dump("dump.h5") as d:
        x = d.eos(layer=5)                 # [items, width] float32, one layer only
        cos = d.pair_cosines()             # {layer: [pairs]} caption vs its negation

Everything is read lazily (one layer or a slice of items at a time), like the Swift reader.
"""
from __future__ import annotations

import json
import os

import numpy as np
import h5py

SCHEMA = "negclip.hidden_states"
SCHEMA_VERSION = 2
# Versions read: 1 (no `tool` attribute; tool_version "negclip 0.1.0") and 2 (`tool` "negclip", tool_version "0.1.0").
READABLE_SCHEMA_VERSIONS = (1, 2)
LABEL_NAMES = ("affirmative", "presence_negated", "absence_negated")  # codes 0, 1, 2; -1 unlabeled


class DumpError(Exception):
    """One line naming the file and what was expected."""


def _text(v):
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


class _H5Reader:
    """What both readers share: `self.file` (an open h5py.File), closing, `with`, decoded attributes."""

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def attrs(self):
        """Root attributes (provenance and layout), strings decoded."""
        return {k: (_text(v) if isinstance(v, (bytes, np.bytes_, str)) else v) for k, v in self.file.attrs.items()}


class Dump(_H5Reader):
    def __init__(self, path, allow_incomplete=False):
        self.path = str(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise DumpError(f"{self.path}: cannot open as HDF5 ({e}); is the file truncated or not a dump?") from None
        a = self.file.attrs
        if _text(a.get("schema", "")) != SCHEMA:
            self.close()
            raise DumpError(f"{self.path}: not a negclip hidden-state store: root attribute schema is "
                            f"{a.get('schema')!r}, expected {SCHEMA!r}")
        version = int(a["schema_version"])
        if version not in READABLE_SCHEMA_VERSIONS:
            self.close()
            hint = ("written by a newer negclip; update notebooks-export/negclip_h5.py" if version > SCHEMA_VERSION
                    else "written by an older negclip; re-run `negclip dump`")
            raise DumpError(f"{self.path}: schema_version {version}, this reader reads {READABLE_SCHEMA_VERSIONS}: {hint}")
        if int(a["complete"]) != 1 and not allow_incomplete:
            self.close()
            raise DumpError(f"{self.path}: incomplete dump (complete = 0, {int(a['items_written'])} items written); "
                            "run `negclip dump ... --resume`")
        if _text(a.get("merge_mode", "")) == "virtual":
            # `negclip merge`: virtual datasets over the shards, by paths relative to this file's
            # folder. libhdf5 reads a missing source as the fill value (NaN), so refuse instead.
            for shard in json.loads(_text(a["shards"])):
                source = os.path.join(os.path.dirname(os.path.abspath(self.path)), shard["file"])
                if not os.path.isfile(source):
                    self.close()
                    raise DumpError(f"{self.path}: missing virtual dataset source {shard['file']}: expected shard "
                                    f"{shard['index']}/{shard['count']} at {source} (keep the shards beside the "
                                    "merged file and move them together, or merge with --copy)")
        self.layers = [int(x) for x in a["layers"]]
        self.n_items = int(a["items_written"])
        self.n_images = int(a["images_written"])
        self.tokens = _text(a["tokens"])

    # -- arrays ----------------------------------------------------------------------------
    def _layer(self, layer):
        if layer not in self.layers:
            raise DumpError(f"{self.path}: layer {layer} not stored: expected one of {self.layers}")
        return self.layers.index(layer)

    def _items(self, items, n=None):
        n = self.n_items if n is None else n
        s = items if isinstance(items, slice) else slice(None) if items is None else slice(*items)
        start, stop, step = s.indices(n)
        if step != 1:
            raise DumpError(f"{self.path}: item slices must be contiguous (step 1), got {s}")
        return slice(start, stop)

    def eos(self, layer, items=None):
        """End-of-text rows of hidden_states[layer]: [items, width] float32."""
        return self.file["text/hidden_states"][self._layer(layer), self._items(items)]

    def eos_all_layers(self, items=None):
        """[layers, items, width] (reads every stored layer; mind the memory)."""
        return self.file["text/hidden_states"][:, self._items(items)]

    def token_states(self, layer, items=None):
        """[items, context_length, width], zero past lengths (dumps made with --tokens all)."""
        if "text/token_states" not in self.file:
            raise DumpError(f"{self.path}: missing /text/token_states: expected a dump made with --tokens all")
        return self.file["text/token_states"][self._layer(layer), self._items(items)]

    def pooled(self, items=None):
        return self.file["text/pooled"][self._items(items)]

    def embeds(self, items=None):
        return self.file["text/embeds"][self._items(items)]

    def lengths(self, items=None):
        return self.file["text/lengths"][self._items(items)]

    def eos_index(self, items=None):
        return self.file["text/eos_index"][self._items(items)]

    def input_ids(self, items=None):
        """Token ids per item, trimmed to lengths (list of int32 arrays)."""
        s = self._items(items)
        ids, lens = self.file["text/input_ids"][s], self.lengths(s)
        return [row[:n] for row, n in zip(ids, lens)]

    def captions(self, items=None):
        return list(self.file["text/captions"].asstr()[self._items(items)])

    def ids(self, items=None):
        return list(self.file["text/ids"].asstr()[self._items(items)])

    def pair_ids(self, items=None):
        return list(self.file["text/pair_ids"].asstr()[self._items(items)])

    def labels(self, items=None):
        """int8 codes: -1 unlabeled, 0 affirmative, 1 presence_negated, 2 absence_negated."""
        return self.file["text/labels"][self._items(items)]

    def image_embeds(self, items=None):
        if "image/embeds" not in self.file:
            raise DumpError(f"{self.path}: missing /image/embeds: expected a dump made with --images")
        return self.file["image/embeds"][self._items(items, self.n_images)]

    def image_ids(self, items=None):
        if "image/ids" not in self.file:
            raise DumpError(f"{self.path}: missing /image/ids: expected a dump made with --images")
        return list(self.file["image/ids"].asstr()[self._items(items, self.n_images)])

    # -- analysis --------------------------------------------------------------------------
    def pairs(self):
        """(affirmative item, negated item) index pairs sharing a pair id."""
        labels, pids = self.labels(), self.pair_ids()
        first = {}
        for i, (p, l) in enumerate(zip(pids, labels)):
            if p and l == 0:
                first.setdefault(p, i)
        return [(first[p], i) for i, (p, l) in enumerate(zip(pids, labels)) if p in first and l in (1, 2)]

    def pair_cosines(self, pairs=None):
        """{layer: cosine(caption, its negation) per pair} at the end-of-text token: the paper's
        per-layer measurement (before the final LayerNorm)."""
        pairs = self.pairs() if pairs is None else pairs
        if not pairs:
            return {}
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        out = {}
        for layer in self.layers:
            x = self.eos(layer).astype(np.float64)
            u, v = x[a], x[b]
            out[layer] = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)
        return out

    def layer_norms(self):
        """{layer: mean L2 norm of the end-of-text row}: how the residual stream grows."""
        return {layer: float(np.linalg.norm(self.eos(layer), axis=1).mean()) for layer in self.layers}


def open_dump(path, allow_incomplete=False):
    return Dump(path, allow_incomplete=allow_incomplete)


# -- probe-layers.h5 (docs/hdf5-schema.md, "probe-layers.h5") ------------------------------------

PROBE_SCHEMA = "negclip.probe_layers"
PROBE_SCHEMA_VERSION = 3  # 3: sweep runs (loss curves), effects per unit x rate, budget check, /selection
# 2: root attribute `tool`, `created_utc`; sweep gains `retrieval_t2i`, `retrieval_i2t`
PROBE_READABLE_VERSIONS = (2, 3)


class ProbeLayers(_H5Reader):
    """Per-layer numbers of a `negclip probe-layers` report: every [layer, 3] array holds
    (mean, low, high) of a 95% interval; index = hidden_states index."""

    def __init__(self, path):
        self.path = str(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise DumpError(f"{self.path}: cannot open as HDF5 ({e})") from None
        a = self.file.attrs
        if _text(a.get("schema", "")) != PROBE_SCHEMA:
            self.close()
            raise DumpError(f"{self.path}: root attribute schema is {a.get('schema')!r}, expected {PROBE_SCHEMA!r}")
        self.version = int(a["schema_version"])
        if self.version not in PROBE_READABLE_VERSIONS:
            self.close()
            raise DumpError(f"{self.path}: schema_version {self.version}, this reader reads {PROBE_READABLE_VERSIONS}")
        self.layers = [int(v) for v in self.file["layers/index"][:]]
        self.hooks = list(self.file["layers/hook"].asstr()[:])

    def separation(self, kind):
        """{"model", "random", "gain_over_random"}: [layer, 3] arrays (those present)."""
        g = self.file[f"separation/{kind}"]
        return {k: g[k][:] for k in g}

    def probe_tasks(self):
        return list(self.file["probes"]) if "probes" in self.file else []

    def probe(self, task):
        """{"model", "random", "control", "gain_over_random", "gain_over_bag_of_words": [layer, 3],
        "selectivity": [layer], "chance": float, "bag_of_words": [3]}."""
        g = self.file[f"probes/{task}"]
        out = {k: g[k][:] for k in g}
        out["chance"] = float(out["chance"][0])
        return out

    def rankings(self):
        return {k: [int(v) for v in self.file[f"rankings/{k}"][:]] for k in _walk(self.file["rankings"])}

    def separation_baselines(self, kind):
        """{"model/unrelated", "model/standardised", ..., "standardised_gain_over_random": [layer, 3],
        "pairs": [unrelated, swap]} (those present; empty when the report has none)."""
        name = f"separation_baselines/{kind}"
        if name not in self.file:
            return {}
        return {k: self.file[f"{name}/{k}"][:] for k in _walk(self.file[name])}

    def gradients(self):
        """Per group ("embeddings", "block.0", ...): {"group": names, "rgn", "fisher": [group, 3],
        "rgn_per_batch", "fisher_per_batch": [group, batch], "parameter_count", "weight_norm": [group]};
        {} when not computed."""
        if "gradients" not in self.file:
            return {}
        g = self.file["gradients"]
        out = {k: g[k][:] for k in g if k != "group"}
        out["group"] = list(g["group"].asstr()[:])
        return out

    def validity(self):
        """{"measure": names, "block_scores": [measure, block], "rho/presence", "rho/absence",
        "rho/negation": [measure, 3], "predicts": [measure]}; {} without a sweep."""
        if "validity" not in self.file:
            return {}
        g = self.file["validity"]
        out = {k: g[k][:] for k in _walk(g) if k != "measure"}
        out["measure"] = list(g["measure"].asstr()[:])
        return out

    def patching(self):
        """The /patching group (activation patching; docs/probing.md, "Activation patching"), or None
        when patching did not run. Every estimate array ends in a (mean, low, high) axis.

        {"roles": [role names],
         "pairs": {"source": "world_minimal_pair" | "swapped_absence_negation", "candidates",
                   "skipped_unequal_length", "skipped_roles", "skipped_phrases", "aligned", "used", "limit": int}
                  (None in files written before the counts),
         "experiments": {"minimal_pairs" | "causal_tracing": {"restored": [role, layer, 3],
                         "all_positions": [layer, 3], "decision": [3]}},
         "slices": {"template:<name>" | "heldout-template": same as an experiment} (minimal pairs),
         "attention_ablation", "mlp_ablation": [block, 3] or None, "heads": [block, head, 3] or None,
         "items": {dataset name: array (strings decoded)} of /patching/items, or None}"""
        if "patching" not in self.file:
            return None
        g = self.file["patching"]

        def experiment(e):
            return {k: e[k][:] for k in ("restored", "all_positions", "decision") if k in e}

        out = {"roles": list(g["roles"].asstr()[:]), "pairs": None,
               "experiments": {k: experiment(g[k]) for k in ("minimal_pairs", "causal_tracing") if k in g},
               "slices": ({k: experiment(v) for k, v in g["minimal_pair_slices"].items()} if "minimal_pair_slices" in g else {}),
               "attention_ablation": g["attention_ablation"][:] if "attention_ablation" in g else None,
               "mlp_ablation": g["mlp_ablation"][:] if "mlp_ablation" in g else None,
               "heads": g["heads"][:] if "heads" in g else None, "items": None}
        if "pairs" in g:
            p = g["pairs"]
            out["pairs"] = {k: (_text(p[k].asstr()[0]) if k == "source" else int(p[k][0])) for k in p}
        if "items" in g:
            it = g["items"]
            out["items"] = {k: (list(it[k].asstr()[:]) if it[k].dtype.kind in "OSU" else it[k][:]) for k in it}
        return out

    def patching_restored(self, experiment="minimal_pairs"):
        """(layers, roles, [layer, role] mean fraction restored) of one experiment (or slice name),
        for a layer x role heat map; None when absent."""
        p = self.patching()
        if p is None:
            return None
        e = p["experiments"].get(experiment) or p["slices"].get(experiment)
        if e is None:
            return None
        restored = e["restored"][:, :, 0].T  # [layer, role]
        return list(range(restored.shape[0])), p["roles"], restored

    def combined_score(self):
        return self.file["combined_score"][:]

    # -- the sweep and the selection (version 3) --

    def _effects(self, path):
        """{"unit": [str], "learning_rate", "steps", "seeds", "within_bound", "on_front": [n],
        "negation_gain", "presence_gain", "absence_gain", "t2i_change", "i2t_change", "retrieval_drop": [n, 3]}
        (fractions; (mean, low, high)), or None when absent."""
        if path not in self.file:
            return None
        g = self.file[path]
        return {k: (list(g[k].asstr()[:]) if g[k].dtype.kind in "OSU" else g[k][:]) for k in g if isinstance(g[k], h5py.Dataset)}

    def sweep_effects(self):
        """Every unit x learning rate effect of the sweep (`_effects`), or None."""
        return self._effects("sweep/effects")

    def sweep_runs(self):
        """{"unit": [str], "seed", "learning_rate", "steps": [run], "losses": [run, step] (NaN past the
        last step), "metrics": [run, 4] (presence, absence, R@1 t2i, R@1 i2t)}, or None."""
        return self._effects("sweep/runs")

    def sweep_base(self):
        return self.file["sweep/base"][:] if "sweep/base" in self.file else None

    def budget_check(self):
        """{"steps": [B, check], "rho": [3, 3] (presence, absence, negation) x (mean, low, high),
        "unit": [str], "negation_gain": [unit, 2, 3]}, or None outside thorough mode."""
        if "sweep/budget_check" not in self.file:
            return None
        g = self.file["sweep/budget_check"]
        return {k: (list(g[k].asstr()[:]) if g[k].dtype.kind in "OSU" else g[k][:]) for k in g if isinstance(g[k], h5py.Dataset)}

    def selection(self):
        """{"unit", "policy": str, "blocks": [int], "learning_rate", "bound", "wise_alpha": float (NaN: not
        traced), "pareto_front": effects, "wise": effects + "alpha" or None, "confirmations": effects +
        "set", "kept", "sum_of_blocks" or None}, or None when no selection was made."""
        if "selection" not in self.file:
            return None
        g = self.file["selection"]
        return {"unit": _text(g["unit"].asstr()[0]), "policy": _text(g["policy"].asstr()[0]),
                "blocks": [int(v) for v in g["blocks"][:]], "learning_rate": float(g["learning_rate"][0]),
                "bound": float(g["bound"][0]), "wise_alpha": float(g["wise_alpha"][0]),
                "pareto_front": self._effects("selection/pareto_front"), "wise": self._effects("selection/wise"),
                "confirmations": self._effects("selection/confirmations")}


def _walk(group, prefix=""):
    """Dataset names under a group, nested names joined with '/' ("probe.x" stays one name)."""
    out = []
    for k, v in group.items():
        if isinstance(v, h5py.Group):
            out += _walk(v, f"{prefix}{k}/")
        else:
            out.append(prefix + k)
    return out


def open_probe_layers(path):
    return ProbeLayers(path)
