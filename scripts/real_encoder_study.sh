#!/usr/bin/env bash
# The real-language study of issue 21 (item 3): all-MiniLM-L6-v2 on the committed real peer excerpts.
# One command regenerates docs/real-encoder.md and the files it is rendered from:
#   1. `negclip import` each file of Tests/Fixtures/peers/ (text-only: --keep-missing-images);
#   2. scripts/real_encoder/pairs.py keeps the caption/negation pairs -> docs/real-encoder/pairs.jsonl;
#   3. `negclip probe-layers --model <MiniLM> --data pairs.jsonl --split test --task negated --no-sweep`
#      (separation with its unrelated-pair baseline, the negated-vs-affirmative probe with its surface
#      baselines) -> docs/real-encoder/report.json;
#   4. study.json (per-source counts, the dump's BERT layer definition and tokenizer, this command) and
#      scripts/real_encoder/render.py -> docs/real-encoder.md.
# About 10 s after the build and the MiniLM download (scripts/get-minilm.sh, 83 MB, cached).
#
# usage: scripts/real_encoder_study.sh
# NEGCLIP (default: the debug build's negclip, built if missing), PYTHON (default: .venv/bin/python, else
# python3; needs h5py to read the dump's attributes), MINILM (default: scripts/get-minilm.sh's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import h5py' 2>/dev/null || { echo "real_encoder_study: $PYTHON: expected h5py (set PYTHON to a python with h5py, e.g. .venv/bin/python)" >&2; exit 1; }
if [[ -z ${NEGCLIP:-} ]]; then
    swift build --product negclip >&2
    NEGCLIP=$(swift build --show-bin-path)/negclip
fi
MODEL=${MINILM:-$(PYTHON=$PYTHON scripts/get-minilm.sh)}
OUT=docs/real-encoder
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

imported=()
for f in ccneg_conclip.json negationclip_coco.json negbench_mcq.csv negbench_retrieval.csv \
         negclip_valid_neg_clip.tsv negrefcocog.json valse_existence.json; do
    name=${f%.*}
    "$NEGCLIP" import --data "Tests/Fixtures/peers/$f" --out "$WORK/$name.jsonl" --keep-missing-images >&2
    imported+=("$WORK/$name.jsonl")
done
"$PYTHON" scripts/real_encoder/pairs.py "$OUT/pairs.jsonl" "$WORK/pairs.counts.json" "${imported[@]}"

OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} "$NEGCLIP" probe-layers --model "$MODEL" --data "$OUT/pairs.jsonl" --split test \
    --task negated --no-sweep --out "$WORK/probe" >&2
cp "$WORK/probe/report.json" "$OUT/report.json.tmp" && mv "$OUT/report.json.tmp" "$OUT/report.json"

# study.json: the counts, what the dump says about the BERT rows, and this command (sorted keys)
"$PYTHON" - "$WORK/pairs.counts.json" "$WORK/probe/dump.h5" "$OUT/study.json" <<'PY'
import json, os, sys
import h5py
counts = json.load(open(sys.argv[1]))
with h5py.File(sys.argv[2], "r") as f:
    attr = lambda k: f.attrs[k].decode() if isinstance(f.attrs[k], bytes) else str(f.attrs[k])
    dump = {k: attr(k) for k in ("layer_definition", "tokenizer", "model_weights_sha256", "truncated_captions")}
study = {"format": "negclip.real-encoder-study 1", "command": "scripts/real_encoder_study.sh",
         "sources": counts["sources"], "records": counts["records"], "dump": dump}
tmp = sys.argv[3] + ".tmp"
with open(tmp, "w") as out:
    json.dump(study, out, indent=2, sort_keys=True)
    out.write("\n")
os.replace(tmp, sys.argv[3])
PY
"$PYTHON" scripts/real_encoder/render.py "$OUT/report.json" "$OUT/study.json" docs/real-encoder.md
echo "wrote docs/real-encoder.md (from $OUT/report.json and $OUT/study.json)"
