"""Readers for the probe datasets of probe-layers.h5 under /probe_details (docs/hdf5-schema.md):
per probe task the surface baselines, the chosen C per network and layer, the convergence tally, the
online code (MDL) and the tagged slices (`heldout-template`, ...). Kept apart from negclip_h5.py so
its `ProbeLayers.probe` keeps reading /probes/<task> (arrays only).

    from negclip_h5 import open_probe_layers
    from probe_h5_extras import probe_details
    with open_probe_layers("OUT/probe-layers.h5") as r:
        d = probe_details(r.file, "truth_minimal")
        d["mdl"]["model"]["compression"]      # [layer]
        d["slices"]["heldout-template"]["model"]  # [layer, 3]
"""
from __future__ import annotations

import h5py

CONVERGENCE_FIELDS = ("fits", "not_converged", "max_iterations_used", "max_final_gradient")


def _tree(group):
    out = {}
    for k, v in group.items():
        out[k] = _tree(v) if isinstance(v, h5py.Group) else v[:]
    return out


def probe_details(f, task):
    """{"baselines": {"bag_of_words", "last_object", "negator": [3]}, "c": {network: [layer]},
    "convergence": {field: value}, "mdl": {network: {"bits", "uniform_bits", "compression": [layer]}},
    "slices": {tag: {"model", "rest": [layer, 3], "items": [2]}}} (those present); {} for a file
    written before /probe_details or a task without it. `f`: an open h5py.File."""
    name = f"probe_details/{task}"
    if name not in f:
        return {}
    out = _tree(f[name])
    if "convergence" in out:
        out["convergence"] = dict(zip(CONVERGENCE_FIELDS, (float(v) for v in out["convergence"])))
    return out
