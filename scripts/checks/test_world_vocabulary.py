"""The synthetic world's vocabulary is a CLIP vocabulary transformers reads (docs/data.md, "Vocabulary").

Runs `negclip make-world` (small), loads the vocabulary files it writes into the world folder with
transformers' `CLIPTokenizer.from_pretrained`, and checks, for every string of every record of every
JSONL file the world has (whatever its templates say):
- `negclip tokenize --model WORLD` gives transformers' ids (no truncation);
- in the text fields of the record schema (captions, rewrites, options, queries, object names), every
  word - every piece of CLIP's pre-tokenizer, `,` included - is one token of the world vocabulary.
The binary is .build/debug/negclip, or $NEGCLIP_SCRATCH_PATH/debug/negclip.
"""
import json
import os
import subprocess

import pytest
from negclip_cli import negclip_binary

transformers = pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; world vocabulary not checked")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Record keys holding text (docs/data.md section 1); other string keys (ids, paths, tags) are only
# compared id for id.
TEXT_KEYS = {"caption", "presence_negated", "absence_negated", "foil", "objects", "negated_object",
             "absent_object", "contrast_objects", "options", "text", "phrase"}


def run(*args, stdin=None):
    r = subprocess.run([negclip_binary(), *args], cwd=ROOT, capture_output=True, text=True, input=stdin)
    assert r.returncode == 0, f"negclip {' '.join(args[:3])} failed:\n{r.stderr}"
    return r.stdout


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world") / "w"
    run("make-world", "--size", "300", "--image-size", "32", "--seed", "3", "--out", str(folder))
    records = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(folder / name) as f:
                records += [json.loads(line) for line in f if line.strip()]
    assert records, f"make-world wrote no records in {folder}"
    return str(folder), records


def test_world_ids_match_transformers(world):
    folder, records = world
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    texts = sorted({s for r in records for s in strings(r)})
    assert not any("\n" in t or "\r" in t for t in texts)
    want = [tok(t, truncation=False)["input_ids"] for t in texts]
    out = run("tokenize", "--model", folder, "--no-truncate", stdin="".join(t + "\n" for t in texts))
    got = [json.loads(line) for line in out.splitlines()]
    assert len(got) == len(texts)
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} world strings: negclip tokenize != transformers, e.g. {bad[:3]!r}"


def test_every_world_word_is_one_token(world):
    folder, records = world
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    backend = tok.backend_tokenizer
    texts = sorted({s for r in records for k, v in r.items() if k in TEXT_KEYS for s in strings(v)})
    assert len(texts) > 50, "the world has too few captions to check"
    split = []
    for t in texts:
        pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(t))]
        ids = tok(t, add_special_tokens=False, truncation=False)["input_ids"]
        if len(ids) != len(pieces):
            split.append((t, [tok.convert_ids_to_tokens(i) for i in ids]))
    assert not split, f"{len(split)} world texts have a word split into several tokens, e.g. {split[:2]!r}"
