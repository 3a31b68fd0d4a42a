"""h5py check of files written by the Swift side (docs/hdf5-schema.md).

Two sources, each with a JSON sidecar holding the exact values the Swift code handed to the writer:
  * synthetic stores written by the Swift test `exportSampleForPythonChecks` (eos and all-token
    modes, gzip, images), run here with NEGCLIP_EXPORT_SAMPLE_DIR set;
  * a real `negclip dump` of Tests/Fixtures/tiny-clip with `--expect-json` (the sidecar is the
    encoder's output), when the `negclip` binary has the `dump` subcommand.
The Swift build must exist (scripts/test.sh builds first). NEGCLIP_SCRATCH_PATH selects a scratch
path other than .build. Runs under pytest or as a plain script.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "notebooks-export"))
import negclip_h5  # noqa: E402

SCRATCH = os.environ.get("NEGCLIP_SCRATCH_PATH", ".build")
_cache: dict[str, list[tuple[Path, Path]]] = {}


def _run(cmd, env=None):
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _workdir():
    if "dir" not in _cache:
        d = Path(tempfile.mkdtemp(prefix="negclip-h5-"))
        atexit.register(shutil.rmtree, d, True)
        _cache["dir"] = [(d, Path())]
    return _cache["dir"][0][0]


def synthetic_files():
    if "synthetic" not in _cache:
        out = _workdir() / "synthetic"
        out.mkdir(exist_ok=True)
        env = dict(os.environ, NEGCLIP_EXPORT_SAMPLE_DIR=str(out))
        _run(["swift", "test", "--scratch-path", SCRATCH, "--skip-build", "--disable-xctest",
              "--filter", "HiddenStateStoreTests.exportSampleForPythonChecks"], env=env)
        _cache["synthetic"] = [(out / f"sample-{m}.h5", out / f"sample-{m}.json") for m in ("eos", "all")]
    return _cache["synthetic"]


def dump_files():
    """Real dumps of the tiny CLIP fixture (eos + all tokens, with images); [] without `negclip dump`."""
    if "dump" not in _cache:
        files = []
        bindir = Path(_run(["swift", "build", "--scratch-path", SCRATCH, "--show-bin-path"]).strip())
        negclip = bindir / "negclip"
        model = ROOT / "Tests/Fixtures/tiny-clip"
        tokenizer = ROOT / "Tests/Fixtures/tokenizer/tiny"
        has_dump = negclip.exists() and "dump" in subprocess.run(
            [negclip, "--help"], capture_output=True, text=True).stdout
        if has_dump and model.is_dir():
            out = _workdir() / "dump"
            out.mkdir(exist_ok=True)
            images = sorted((ROOT / "Tests/Fixtures/images/src").glob("*.png"))[:3]
            data = out / "data.jsonl"
            records = [
                {"id": "1", "caption": "a dog on a sofa", "negated_caption": "no dog on the sofa", "image": str(images[0])},
                {"id": "2", "caption": "a woman riding a horse, not wearing a hat", "label": "absence_negated",
                 "pair_id": "p2", "image": str(images[1])},
                {"id": "3", "caption": "a woman riding a horse", "label": "affirmative", "pair_id": "p2", "image": str(images[1])},
                {"id": "4", "caption": "ünïcode — a cat ☃ on the mat", "image": str(images[2])},
            ] + [{"id": f"x{i}", "caption": f"a photo of {i} apples and no pears"} for i in range(7)]
            data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
            for mode in ("eos", "all"):
                h5, js = out / f"tiny-{mode}.h5", out / f"tiny-{mode}.json"
                _run([negclip, "dump", "--model", model, "--tokenizer", tokenizer, "--data", data, "--out", h5,
                      "--tokens", mode, "--layers", "0,2-3", "--batch", "3", "--chunk-items", "4", "--gzip", "4",
                      "--images", "--expect-json", js])
                files.append((h5, js))
        else:
            print(f"NOTE: no real dump checked (negclip dump available: {has_dump}, fixture: {model.is_dir()})")
        _cache["dump"] = files
    return _cache["dump"]


def check_file(h5path: Path, jsonpath: Path):
    want = json.loads(jsonpath.read_text())
    n = len(want["ids"])
    L, W, P, T = len(want["layers"]), want["width"], want["projection_dim"], want["context_length"]
    with h5py.File(h5path, "r") as f:
        a = f.attrs
        assert a["schema"] == "negclip.hidden_states", a["schema"]
        assert int(a["schema_version"]) == want["schema_version"] == 2
        # Schema 2: tool and the version alone (the synthetic stores' writer calls itself version "test").
        assert a["tool"] == "negclip" and " " not in a["tool_version"], (a["tool"], a["tool_version"])
        prov = want["provenance"]
        assert sorted(prov) == ["command_line", "created_utc", "data", "data_sha256", "layer_definition", "model",
                                "model_sha256", "seeds", "tool", "tool_version"], sorted(prov)
        assert prov["tool"] == a["tool"] and prov["tool_version"] == a["tool_version"], prov
        assert prov["model_sha256"] == a["model_weights_sha256"] and prov["data_sha256"] == a["dataset_sha256"], prov
        assert prov["layer_definition"] == a["layer_definition"], prov
        assert int(a["complete"]) == 1
        assert int(a["items_written"]) == n
        assert list(a["layers"]) == want["layers"]
        assert a["layer_definition"].startswith("layer l = transformers' hidden_states[l]"), a["layer_definition"]
        for key in ("tool", "tool_version", "model_config_sha256", "model_weights_sha256", "dataset_sha256",
                    "tokenizer", "command_line", "created_utc", "dtype", "tokens"):
            assert isinstance(a[key], str), f"attribute {key} should read as str, got {type(a[key])}"
        for key, value in want["attributes"].items():
            assert a[key] == value, f"attribute {key}: {a[key]!r} != {value!r}"
        assert isinstance(int(a["seed"]), int)

        def ds(path, shape, dtype, dims):
            d = f[path]
            assert d.shape == shape, f"{path}: shape {d.shape} != {shape}"
            assert d.dtype == dtype, f"{path}: dtype {d.dtype} != {dtype}"
            assert [x.label for x in d.dims] == dims, f"{path}: dims {[x.label for x in d.dims]} != {dims}"
            return d

        hs = ds("text/hidden_states", (L, n, W), np.float32, ["layer", "item", "width"])
        assert list(hs.dims[0][0][:]) == want["layers"]
        np.testing.assert_array_equal(hs[:], np.array(want["hidden_states"], np.float32).reshape(L, n, W))
        np.testing.assert_array_equal(ds("text/pooled", (n, W), np.float32, ["item", "width"])[:],
                                      np.array(want["pooled"], np.float32))
        np.testing.assert_array_equal(ds("text/embeds", (n, P), np.float32, ["item", "projection"])[:],
                                      np.array(want["embeds"], np.float32))
        ids = ds("text/input_ids", (n, T), np.int32, ["item", "token"])[:]
        lengths = ds("text/lengths", (n,), np.int32, ["item"])[:]
        assert list(lengths) == want["lengths"]
        assert list(ds("text/eos_index", (n,), np.int32, ["item"])[:]) == want["eos_index"]
        # role rows (optional datasets, docs/hdf5-schema.md "Role rows"): -1 for none or not known (a
        # store written without them, as these synthetic ones); a row only for a caption with a cue, a
        # text row (after the start token, before end-of-text), the cue before the denied object
        negator = ds("text/negator_index", (n,), np.int32, ["item"])[:]
        denied = ds("text/negated_object_index", (n,), np.int32, ["item"])[:]
        for i, caption in enumerate(want["captions"]):
            has_cue = any(w in ("no", "not", "without", "never", "none", "nothing") for w in caption.lower().replace(",", " ").split())
            assert negator[i] < 0 or has_cue, (caption, negator[i])
            if negator[i] >= 0:
                assert 0 < negator[i] < lengths[i] - 1, (caption, negator[i])
                assert denied[i] == -1 or negator[i] < denied[i] < lengths[i] - 1, (caption, negator[i], denied[i])
        for i in range(n):
            assert list(ids[i, :lengths[i]]) == want["input_ids"][i]
            assert not ids[i, lengths[i]:].any(), "input_ids must be zero past lengths"
        assert list(ds("text/labels", (n,), np.int8, ["item"])[:]) == want["labels"]
        for path, key in (("text/captions", "captions"), ("text/ids", "ids"), ("text/pair_ids", "pair_ids")):
            d = f[path]
            assert d.shape == (n,) and h5py.check_string_dtype(d.dtype).encoding == "utf-8", path
            assert list(d.asstr()[:]) == want[key], path
        if want["tokens"] == "all":
            ts = ds("text/token_states", (L, n, T, W), np.float32, ["layer", "item", "token", "width"])[:]
            for li in range(L):
                for i in range(n):
                    row = np.array(want["token_states"][li][i], np.float32).reshape(lengths[i], W)
                    np.testing.assert_array_equal(ts[li, i, :lengths[i]], row)
                    assert not ts[li, i, lengths[i]:].any()
            # Stored sparsely: one item and up to 8 token rows per chunk, and only the chunks
            # holding real rows are allocated (the padding reads back as the fill value 0).
            d = f["text/token_states"]
            B = min(8, T)
            assert d.chunks == (1, 1, B, W) and d.fillvalue == 0
            written = sum(-(-int(x) // B) for x in lengths) * L
            assert d.id.get_num_chunks() == written, (d.id.get_num_chunks(), written)
        else:
            assert "text/token_states" not in f
        if want["image_ids"]:
            m = len(want["image_ids"])
            assert int(a["images_written"]) == m
            np.testing.assert_array_equal(ds("image/embeds", (m, P), np.float32, ["image", "projection"])[:],
                                          np.array(want["image_embeds"], np.float32))
            assert list(f["image/ids"].asstr()[:]) == want["image_ids"]

    # The notebook reader gives the same values, one layer / slice at a time.
    with negclip_h5.open_dump(h5path) as d:
        for li, layer in enumerate(want["layers"]):
            np.testing.assert_array_equal(d.eos(layer, items=(1, n)), np.array(want["hidden_states"][li][1:], np.float32))
        assert d.captions() == want["captions"]
        assert [list(x) for x in d.input_ids()] == want["input_ids"]


def test_synthetic_stores_match_sidecar():
    for h5, js in synthetic_files():
        check_file(h5, js)


def test_real_dump_matches_encoder_output():
    files = dump_files()
    for h5, js in files:
        check_file(h5, js)
    for h5, _ in files:
        with h5py.File(h5, "r") as f:
            assert f.attrs["model"].endswith("tiny-clip")
            assert len(f.attrs["model_weights_sha256"]) == 64
            assert f.attrs["compression"] == "shuffle+gzip-4"
            assert f["text/hidden_states"].compression == "gzip"
            assert int(f.attrs["images_written"]) == 3  # 4 records name 3 distinct images
            data = h5.parent / "data.jsonl"
            assert f.attrs["dataset_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
            assert int(f.attrs["items_written"]) == 12  # 11 records, one with a negated_caption
            assert list(f["text/labels"][:3]) == [0, 1, 2]
            assert list(f["text/pair_ids"].asstr()[:4]) == ["1", "1", "p2", "p2"]



def test_reader_errors_are_one_line():
    h5, _ = synthetic_files()[0]
    tmp = _workdir()
    newer = tmp / "newer.h5"
    shutil.copy(h5, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = np.int64(3)
    for path, needle in ((newer, "newer negclip"),):
        try:
            negclip_h5.open_dump(path)
        except negclip_h5.DumpError as e:
            assert needle in str(e) and "\n" not in str(e), str(e)
        else:
            raise AssertionError(f"{path}: expected DumpError")
    cut = tmp / "cut.h5"
    cut.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    try:
        negclip_h5.open_dump(cut)
    except negclip_h5.DumpError as e:
        assert str(cut) in str(e), str(e)
    else:
        raise AssertionError("truncated file opened without error")


def test_plot_script_runs():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("SKIPPED plot check: matplotlib not installed")
        return
    sys.path.insert(0, str(ROOT / "notebooks-export"))
    import plot_layers

    h5, _ = synthetic_files()[0]
    out = _workdir() / "layers.png"
    assert plot_layers.main([str(h5), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    with negclip_h5.open_dump(h5) as d:
        rows = plot_layers.layer_table(d)
        assert {r[0] for r in rows} == set(d.layers)

    # The notebook's code cells run top to bottom on the same file.
    import matplotlib
    matplotlib.use("Agg")
    nb = json.loads((ROOT / "notebooks-export/layers.ipynb").read_text())
    os.environ["NEGCLIP_DUMP"] = str(h5)
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT / "notebooks-export")
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec("".join(cell["source"]), scope)
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print(f"ok {name}")
