"""Checkpoints as transformers 5 saves them: tokenizer.json + tokenizer_config.json, no vocab.json /
merges.txt.

- A small random CLIPModel with the full OpenAI vocabulary (rebuilt from
  Tests/Fixtures/openai-vocab/bpe_simple_vocab_16e6.txt.gz as HF's conversion does) is saved with
  `save_pretrained` (model and tokenizer) into one folder, which is used exactly as saved: `negclip
  encode` on it must give transformers' text embeddings (atol 1e-5) and ids.
- `negclip tokenize` on that folder must give CLIPTokenizer's ids for the golden strings of
  Tests/Fixtures/tokenizer/openai_goldens.json, and the same ids as on the vocab.json + merges.txt
  folder the tokenizer was built from.
- Special-token precedence (tokenizer_config.json's added_tokens_decoder, special_tokens_map.json,
  tokenizer.json's added_tokens, both vocabulary sources in one folder): ids equal transformers'.

The binary is .build/debug/negclip, or $NEGCLIP_SCRATCH_PATH/debug/negclip.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
from negclip_cli import negclip_binary

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch", reason="SKIPPED: torch not installed; tokenizer.json checkpoints not checked")
transformers = pytest.importorskip("transformers", reason="SKIPPED: transformers not installed; tokenizer.json checkpoints not checked")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GZ = os.path.join(ROOT, "Tests", "Fixtures", "openai-vocab", "bpe_simple_vocab_16e6.txt.gz")
TINY_SAVED = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer", "tiny-saved")
TINY = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer", "tiny")
CAPTIONS = ["a dog on a sofa", "no dog on the sofa", "There is NO cat, only a café table.",
            "a red circle but no blue square", "don't panic! 2 dogs, 3 cats", "😀 <|endoftext|> x",
            "a photo of " + "a cat " * 40]


def run(*args, stdin=None):
    r = subprocess.run([negclip_binary(), *args], cwd=ROOT, capture_output=True, text=True, input=stdin)
    assert r.returncode == 0, f"negclip {' '.join(args[:3])} failed:\n{r.stderr}"
    return r.stdout


def negclip_ids(folder, texts):
    """`negclip tokenize` reads one text per line: callers pass texts without line breaks."""
    assert not any("\n" in t or "\r" in t for t in texts)
    out = run("tokenize", "--model", folder, stdin="".join(t + "\n" for t in texts))
    return [json.loads(line) for line in out.splitlines()]


def hf_ids(tok, texts):
    return [tok(t, truncation=True, max_length=77)["input_ids"] for t in texts]


@pytest.fixture(scope="module")
def full_vocab_folder(tmp_path_factory):
    """vocab.json + merges.txt + configs of the OpenAI vocabulary, laid out like openai/clip-vit-base-patch32."""
    sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
    import tokenizer as tokenizer_fixtures  # scripts/fixtures/tokenizer.py
    folder = str(tmp_path_factory.mktemp("vocab-pair"))
    vocab = tokenizer_fixtures.write_hf_folder(folder, tokenizer_fixtures.openai_merges(GZ))
    assert len(vocab) == 49408
    return folder


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory, full_vocab_folder):
    """A random CLIPModel + its tokenizer, both saved by transformers into one folder."""
    folder = str(tmp_path_factory.mktemp("saved-by-transformers"))
    torch.manual_seed(0)
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407, projection_dim=16)
    vision = dict(hidden_size=40, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, hidden_act="quick_gelu", projection_dim=16)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    transformers.CLIPModel(cfg).eval().save_pretrained(folder)
    transformers.CLIPTokenizer.from_pretrained(full_vocab_folder).save_pretrained(folder)
    return folder


def test_saved_folder_has_no_vocab_json(saved_checkpoint):
    # What this check is about; if a later transformers writes vocab.json again, the Swift reader of
    # tokenizer.json is still what runs (it wins when both exist), so the rest stays meaningful.
    files = set(os.listdir(saved_checkpoint))
    assert "tokenizer.json" in files, files
    if transformers.__version__.startswith("5."):
        assert not {"vocab.json", "merges.txt"} & files, files


def test_negclip_encode_on_saved_checkpoint(saved_checkpoint):
    model = transformers.CLIPModel.from_pretrained(saved_checkpoint).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(saved_checkpoint)
    with torch.no_grad():
        batch = tok(CAPTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        feats = model.get_text_features(**batch)
        feats = getattr(feats, "pooler_output", feats)   # transformers 5 may return an output object
        want = torch.nn.functional.normalize(feats, dim=-1).double().numpy()
    args = ["encode", "--model", saved_checkpoint]
    for c in CAPTIONS:
        args += ["--text", c]
    out = json.loads(run(*args))
    got = np.array([t["embedding"] for t in out["texts"]], dtype=np.float64)
    assert got.shape == want.shape
    diff = np.abs(got - want).max()
    assert diff <= 1e-5, f"negclip encode vs transformers on a tokenizer.json checkpoint: max|diff| = {diff:.3g}"
    assert negclip_ids(saved_checkpoint, CAPTIONS) == hf_ids(tok, CAPTIONS)


def test_full_vocabulary_ids_from_both_sources(saved_checkpoint, full_vocab_folder):
    golden = json.load(open(os.path.join(ROOT, "Tests", "Fixtures", "tokenizer", "openai_goldens.json")))
    texts = [c["text"] for c in golden["cases"] if "\n" not in c["text"] and "\r" not in c["text"]]
    assert len(texts) > 900
    tok = transformers.CLIPTokenizer.from_pretrained(saved_checkpoint)
    want = hf_ids(tok, texts)
    got = negclip_ids(saved_checkpoint, texts)
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} strings differ from transformers on tokenizer.json, e.g. {bad[:3]!r}"
    assert negclip_ids(full_vocab_folder, texts) == got, "vocab.json + merges.txt and tokenizer.json disagree"


def _variant(tmp_path, name, files):
    """tokenizer/tiny-saved (or tiny) copied, then `files` (name -> JSON object or None to delete) applied."""
    folder = tmp_path / name
    shutil.copytree(TINY_SAVED, folder)
    for fname, content in files.items():
        path = folder / fname
        if content is None:
            path.unlink()
        elif isinstance(content, str):
            shutil.copy(content, path)
        else:
            path.write_text(json.dumps(content))
    return str(folder)


def _flipped_tokenizer_json():
    d = json.load(open(os.path.join(TINY_SAVED, "tokenizer.json")))
    for t in d["added_tokens"]:
        t["normalized"] = not t["normalized"]
    return d


def _cut_merges_tokenizer_json():
    d = json.load(open(os.path.join(TINY_SAVED, "tokenizer.json")))
    d["model"]["merges"] = d["model"]["merges"][:100]
    return d


def _string_merges_tokenizer_json():
    d = json.load(open(os.path.join(TINY_SAVED, "tokenizer.json")))
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]   # tokenizers < 0.20 wrote strings
    return d


DECODER = {"1012": {"content": "<|startoftext|>", "normalized": False, "special": True},
           "1013": {"content": "<|endoftext|>", "normalized": True, "special": True}}
VARIANTS = {
    "as-saved": {},
    "flipped-added-tokens": {"tokenizer.json": _flipped_tokenizer_json},
    "config-decoder-wins": {"tokenizer_config.json": {"added_tokens_decoder": DECODER, "bos_token": "<|startoftext|>",
                                                      "eos_token": "<|endoftext|>", "model_max_length": 77}},
    "special-map-vs-tokenizer-json": {"special_tokens_map.json": {
        "bos_token": {"content": "<|startoftext|>", "normalized": False},
        "eos_token": {"content": "<|endoftext|>", "normalized": True}}},
    "both-sources-tokenizer-json-wins": {"tokenizer.json": _cut_merges_tokenizer_json,
                                         "vocab.json": os.path.join(TINY, "vocab.json"),
                                         "merges.txt": os.path.join(TINY, "merges.txt")},
    "merges-as-strings": {"tokenizer.json": _string_merges_tokenizer_json},
}
PROBES = ["the photograph of a person", "<|STARTOFTEXT|> a<|ENDOFTEXT|>b", "<|startoftext|>!<|endoftext|>'s",
          "x\u3000<|Startoftext|>", "A photo of NO cat.", "  a  b  "]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_special_token_precedence_matches_transformers(tmp_path, name):
    files = {k: (v() if callable(v) else v) for k, v in VARIANTS[name].items()}
    folder = _variant(tmp_path, name, files)
    golden = json.load(open(os.path.join(TINY, "goldens.json")))
    texts = PROBES + [c["text"] for c in golden["cases"] if "\n" not in c["text"] and "\r" not in c["text"]]
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    want, got = hf_ids(tok, texts), negclip_ids(folder, texts)
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{name}: {len(bad)} strings differ from transformers, e.g. {bad[:3]!r}"
