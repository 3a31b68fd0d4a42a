"""docs/real-encoder.md is what scripts/real_encoder/render.py makes of the committed run
(docs/real-encoder/report.json, study.json), the committed pairs are the ones that run measured, the
renderer refuses an incomplete report in one line, and pairs.py maps VALSE's caption/foil to the right
kind. CI-safe: no weights needed (regenerating the run itself needs all-MiniLM-L6-v2:
scripts/real_encoder_study.sh)."""
import copy
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDY = os.path.join(ROOT, "docs", "real-encoder")
RENDER = os.path.join(ROOT, "scripts", "real_encoder", "render.py")
PAIRS = os.path.join(ROOT, "scripts", "real_encoder", "pairs.py")


FULL = os.path.join(STUDY, "valse-full")   # the second run (the whole VALSE existence file), when committed


def render(report, study, out, *extra):
    return subprocess.run([sys.executable, RENDER, str(report), str(study), str(out), *map(str, extra)], capture_output=True, text=True)


def test_committed_page_is_what_the_renderer_makes(tmp_path):
    out = tmp_path / "real-encoder.md"
    extra = [os.path.join(FULL, "report.json"), os.path.join(FULL, "study.json")] if os.path.exists(os.path.join(FULL, "report.json")) else []
    r = render(os.path.join(STUDY, "report.json"), os.path.join(STUDY, "study.json"), out, *extra)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "docs", "real-encoder.md")) as f:
        committed = f.read()
    assert out.read_text() == committed, \
        "docs/real-encoder.md differs from render.py's output; rerun scripts/real_encoder/render.py docs/real-encoder/report.json docs/real-encoder/study.json docs/real-encoder.md [docs/real-encoder/valse-full/report.json docs/real-encoder/valse-full/study.json] (or the whole study: scripts/real_encoder_study.sh)"


def test_committed_pairs_are_the_measured_data():
    for folder in [STUDY, FULL]:
        if folder == FULL and not os.path.exists(os.path.join(FULL, "report.json")):
            continue
        with open(os.path.join(folder, "report.json")) as f:
            report = json.load(f)
        with open(os.path.join(folder, "pairs.jsonl"), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        assert report["provenance"]["data_sha256"] == sha, f"{folder}/pairs.jsonl is not the file report.json measured; rerun scripts/real_encoder_study.sh"


def _drop(obj, path):
    cur = obj
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    del cur[parts[-1]]


def test_renderer_refuses_a_report_missing_its_keys(tmp_path):
    with open(os.path.join(STUDY, "report.json")) as f:
        report = json.load(f)
    for path in ["separation.presence.baselines.model.standardised", "separation.absence.model", "provenance.model_sha256",
                 "probes.0.bag_of_words", "layers", "format"]:
        bad = copy.deepcopy(report)
        _drop(bad, path)
        src = tmp_path / "report.json"
        src.write_text(json.dumps(bad))
        out = tmp_path / "page.md"
        r = render(src, os.path.join(STUDY, "study.json"), out)
        assert r.returncode == 2, (path, r.returncode, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (path, r.stderr)
        # a probe's keys are named within the probe: "FILE: probes.negated: missing key 'bag_of_words'"
        key = "bag_of_words" if path.startswith("probes") else path
        assert str(src) in lines[0] and f"'{key}'" in lines[0], (path, lines[0])
        assert not out.exists() and not (tmp_path / "page.md.tmp").exists()


def test_renderer_refuses_a_study_missing_its_keys_and_a_wrong_format(tmp_path):
    with open(os.path.join(STUDY, "study.json")) as f:
        study = json.load(f)
    bad = copy.deepcopy(study)
    del bad["dump"]["layer_definition"]
    src = tmp_path / "study.json"
    src.write_text(json.dumps(bad))
    r = render(os.path.join(STUDY, "report.json"), src, tmp_path / "page.md")
    assert r.returncode == 2 and r.stderr.strip() == f"render.py: {src}: missing key 'dump.layer_definition'"
    with open(os.path.join(STUDY, "report.json")) as f:
        report = json.load(f)
    report["format"] = "negclip.probe-layers-report v2"
    rsrc = tmp_path / "report.json"
    rsrc.write_text(json.dumps(report))
    r = render(rsrc, os.path.join(STUDY, "study.json"), tmp_path / "page.md")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "expected \"negclip.probe-layers-report v3\", found \"negclip.probe-layers-report v2\"" in r.stderr


def _imported(tmp_path, name, fmt, records):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / f"{name}.jsonl.provenance.json").write_text(json.dumps(
        {"source": f"/x/{name}.json", "source_format": fmt, "source_sha256": "0" * 64, "left_out": 1}))
    return str(path)


def test_pairs_maps_valse_directions_and_skips_non_negation_sources(tmp_path):
    valse = _imported(tmp_path, "valse", "valse", [
        {"id": "v1", "type": "caption", "caption": "There are cars parked.", "foil": "There are no cars parked.", "image": "a.jpg", "split": "test"},
        {"id": "v2", "type": "caption", "caption": "There are no animals.", "foil": "There are animals.", "image": "a.jpg", "split": "test"},
        {"id": "v3", "type": "caption", "caption": "There is a dog.", "foil": "There is a cat.", "image": "a.jpg", "split": "test"},
        {"id": "v4", "type": "caption", "caption": "There is a horse.", "foil": "There is no horse.", "image": "a.jpg", "split": "test"},
        {"id": "v5", "type": "caption", "caption": "There is the horse.", "foil": "There is no horse.", "image": "a.jpg", "split": "test"}])
    swaps = _imported(tmp_path, "tsv", "negclip", [
        {"id": "n1", "type": "caption", "caption": "a dog on a mat", "foil": "a mat on a dog", "image": "a.jpg", "split": "test"}])
    out, counts = tmp_path / "pairs.jsonl", tmp_path / "counts.json"
    r = subprocess.run([sys.executable, PAIRS, str(out), str(counts), valse, swaps], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [
        {"id": "v1", "type": "caption", "caption": "There are cars parked.", "presence_negated": "There are no cars parked.", "image": "a.jpg", "split": "test"},
        {"id": "v2", "type": "caption", "caption": "There are animals.", "absence_negated": "There are no animals.", "image": "a.jpg", "split": "test"},
        {"id": "v4", "type": "caption", "caption": "There is a horse.", "presence_negated": "There is no horse.", "image": "a.jpg", "split": "test"}]
    c = json.loads(counts.read_text())["sources"]
    assert (c["valse.json"]["presence_pairs"], c["valse.json"]["absence_pairs"], c["valse.json"]["dropped"]) == (2, 1, 2)
    assert (c["tsv.json"]["imported"], c["tsv.json"]["presence_pairs"], c["tsv.json"]["absence_pairs"]) == (1, 0, 0)
    assert "word-order swaps" in c["tsv.json"]["note"]


def test_pairs_refuses_an_import_without_provenance(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    r = subprocess.run([sys.executable, PAIRS, str(tmp_path / "o.jsonl"), str(tmp_path / "c.json"), str(path)], capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "x.jsonl.provenance.json" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
