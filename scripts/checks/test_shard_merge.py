"""h5py check of `negclip dump --shard` + `negclip merge` (docs/scale.md, docs/hdf5-schema.md).

The tiny CLIP fixture dumps 20 captions with every token row and 4 images (gzip, batches of 4) once
whole and once in 3 shards (shard 1 from Slurm's job-array variables, shard 2 from a Kubernetes
indexed Job's JOB_COMPLETION_INDEX); the shards are merged as HDF5 virtual datasets and with --copy.
Both merged files must equal the single dump bit for bit on every dataset, read by h5py (its own
libhdf5, not ours), including after the folder is moved; a virtual file without one of its shards
reads the fill value there, which is why our readers refuse to open it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from negclip_cli import negclip_binary

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "notebooks-export"))
import negclip_h5  # noqa: E402

SCHEDULER_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                  "SLURM_ARRAY_TASK_STEP", "JOB_COMPLETION_INDEX")
# Provenance that names the run itself, not the numbers: differs between the merged file and the dump.
RUN_ATTRIBUTES = {"command_line", "created_utc", "merge_mode", "shards"}


def run(cmd, **env):
    e = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    e.update(env)
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=e, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    negclip = negclip_binary()
    d = tmp_path_factory.mktemp("shard")
    images = sorted((ROOT / "Tests/Fixtures/images/src").glob("*.png"))[:4]
    records = []
    for i in range(10):
        r = {"id": f"r{i}", "caption": f"a photo of {i + 1} dogs on a table", "negated_caption": f"no cat next to dog {i}"}
        if i % 2 == 0:
            r["image"] = str(images[(i // 2) % 4])
        records.append(r)
    data = d / "captions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["dump", "--model", ROOT / "Tests/Fixtures/tiny-clip", "--tokenizer", ROOT / "Tests/Fixtures/tokenizer/tiny",
              "--data", data, "--tokens", "all", "--images", "--batch", "4", "--gzip", "1"]
    whole = d / "whole.h5"
    run([negclip, *common, "--out", whole])
    (d / "shards").mkdir()
    shards = [d / "shards" / f"part-{k}.h5" for k in range(3)]
    run([negclip, *common, "--out", shards[0], "--shard", "0/3"])
    r1 = run([negclip, *common, "--out", shards[1]], SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="3")
    assert "dump: shard 1/3 from SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3" in r1.stderr, r1.stderr
    r2 = run([negclip, *common, "--out", shards[2], "--shards", "3"], JOB_COMPLETION_INDEX="2")
    assert "dump: shard 2/3 from JOB_COMPLETION_INDEX=2, --shards 3" in r2.stderr, r2.stderr
    merged, copied = d / "all.h5", d / "all-copy.h5"
    run([negclip, "merge", "--out", merged, shards[2], shards[0], shards[1]])
    run([negclip, "merge", "--copy", "--out", copied, *shards])
    return {"dir": d, "whole": whole, "merged": merged, "copied": copied, "shards": shards}


def datasets(f):
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_datasets(path, reference):
    with h5py.File(path, "r") as f, h5py.File(reference, "r") as g:
        a, b = datasets(f), datasets(g)
        assert sorted(a) == sorted(b), f"{path}: datasets {sorted(a)} != {sorted(b)}"
        for name in sorted(a):
            x, y = a[name][()], b[name][()]
            assert x.dtype == y.dtype and x.shape == y.shape, f"{name}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
            if x.dtype.kind == "O":
                assert list(x) == list(y), name
            else:
                assert x.tobytes() == y.tobytes(), f"{name}: not bit for bit equal (max |diff| {np.abs(x.astype(float) - y.astype(float)).max()})"
            assert a[name].attrs.get("axes") == b[name].attrs.get("axes"), name
            assert [d.label for d in a[name].dims] == [d.label for d in b[name].dims], name
        for key in set(g.attrs) | set(f.attrs):
            if key in RUN_ATTRIBUTES:
                continue
            assert key in f.attrs and key in g.attrs, f"root attribute {key} only in one file"
            assert np.array_equal(np.asarray(f.attrs[key]), np.asarray(g.attrs[key])), f"root attribute {key}: {f.attrs[key]!r} != {g.attrs[key]!r}"


def test_virtual_and_copy_equal_the_single_dump(dumps):
    for path in (dumps["merged"], dumps["copied"]):
        assert_same_datasets(path, dumps["whole"])


def test_layout_and_provenance(dumps):
    with h5py.File(dumps["merged"], "r") as f:
        assert f.attrs["merge_mode"] == "virtual"
        shards = json.loads(f.attrs["shards"])
        assert [s["file"] for s in shards] == ["shards/part-0.h5", "shards/part-1.h5", "shards/part-2.h5"]
        assert [s["items"] for s in shards] == [[0, 4], [4, 12], [12, 20]]
        assert list(json.loads(json.dumps(shards[0], sort_keys=True))) == list(shards[0]), "shard records: sorted keys"
        for name in ("text/hidden_states", "text/token_states", "text/pooled", "text/embeds", "text/input_ids",
                     "text/lengths", "text/eos_index", "text/negator_index", "text/negated_object_index", "text/labels",
                     "text/item", "image/embeds", "image/item"):
            assert f[name].is_virtual, name
            files = {s.file_name for s in f[name].virtual_sources()}
            assert files <= {"shards/part-0.h5", "shards/part-1.h5", "shards/part-2.h5"}, files
        for name in ("text/captions", "text/ids", "text/pair_ids", "image/ids", "text/layer"):
            assert not f[name].is_virtual, name
    with h5py.File(dumps["copied"], "r") as f:
        assert f.attrs["merge_mode"] == "copy"
        assert not any(d.is_virtual for d in datasets(f).values())
    for k, path in enumerate(dumps["shards"]):
        with h5py.File(path, "r") as f:
            assert (int(f.attrs["shard_index"]), int(f.attrs["shard_count"]), int(f.attrs["shard_unit"])) == (k, 3, 4)
            a, b = [int(v) for v in f.attrs["shard_items"]]
            assert list(f["text/item"][()]) == list(range(a, b)), "a shard's /text/item holds global indices"
            assert int(f.attrs["total_items"]) == 20 and int(f.attrs["total_images"]) == 4


def test_moved_folder_reads_and_missing_shard_is_refused(dumps, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(dumps["dir"], moved)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # neither the old folder nor the new one
    try:
        assert_same_datasets(moved / "all.h5", dumps["whole"])
        assert negclip_h5.open_dump(moved / "all.h5").eos(2).shape == (20, 32)
        (moved / "shards" / "part-1.h5").unlink()
        with h5py.File(moved / "all.h5", "r") as f:
            # libhdf5 reads the missing rows as the fill value: NaN, never a plausible number.
            assert np.isnan(f["text/pooled"][4:12]).all() and not np.isnan(f["text/pooled"][:4]).any()
        with pytest.raises(negclip_h5.DumpError, match="shards/part-1.h5"):
            negclip_h5.open_dump(moved / "all.h5")
    finally:
        os.chdir(cwd)
