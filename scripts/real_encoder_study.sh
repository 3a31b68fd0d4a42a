#!/usr/bin/env bash
# The real-language study of issue 21 (item 3): all-MiniLM-L6-v2 on real negation captions.
# One command regenerates docs/real-encoder.md and the files it is rendered from:
#   1. `negclip import` each file of Tests/Fixtures/peers/ (text-only: --keep-missing-images);
#   2. scripts/real_encoder/pairs.py keeps the caption/negation pairs -> docs/real-encoder/pairs.jsonl;
#   3. `negclip probe-layers --model <MiniLM> --data pairs.jsonl --split test --task negated --no-sweep`
#      (separation with its unrelated-pair baseline, the negated-vs-affirmative probe with its surface
#      baselines, both against a random-weights BERT of the same config, seed 0) -> docs/real-encoder/report.json;
#   4. study.json (per-source counts, the dump's BERT layer definition and tokenizer, this command);
#   5. with VALSE_EXISTENCE_JSON (the whole real VALSE data/existence.json at commit 2152d90d, sha256
#      checked; not committed, 420 kB), steps 1-4 again on it -> docs/real-encoder/valse-full/; without
#      it an existing valse-full/ is kept as it is and rendered again;
#   6. scripts/real_encoder/render.py -> docs/real-encoder.md.
# About 30 s (2 min with the VALSE file; drawing the random-weights BERT is 10-20 s of each run) after the build and the MiniLM download (scripts/get-minilm.sh, 83 MB, cached).
#
# usage: scripts/real_encoder_study.sh [VALSE_EXISTENCE_JSON]
#   the file: https://raw.githubusercontent.com/Heidelberg-NLP/VALSE/2152d90d4aecd11f7f74cf03420abcb63efff9c5/data/existence.json
# NEGCLIP (default: the debug build's negclip, built if missing), PYTHON (default: .venv/bin/python, else
# python3; needs h5py to read the dump's attributes), MINILM (default: scripts/get-minilm.sh's folder).
set -euo pipefail
VALSE_FULL=${1:-}
VALSE_SHA256=b20fca52eba86c544083d423345a2e28e60e601ef61c56c9ac1c73a95a3a6d18
VALSE_URL=https://raw.githubusercontent.com/Heidelberg-NLP/VALSE/2152d90d4aecd11f7f74cf03420abcb63efff9c5/data/existence.json
if [[ -n $VALSE_FULL ]]; then
    [[ -f $VALSE_FULL ]] || { echo "real_encoder_study: $VALSE_FULL: no such file (expected VALSE's data/existence.json: $VALSE_URL)" >&2; exit 1; }
    VALSE_FULL=$(cd "$(dirname "$VALSE_FULL")" && pwd)/$(basename "$VALSE_FULL")
    got=$(sha256sum "$VALSE_FULL" | cut -d' ' -f1)
    [[ $got == "$VALSE_SHA256" ]] || { echo "real_encoder_study: $VALSE_FULL: expected sha256 $VALSE_SHA256 (VALSE existence.json at 2152d90d), found $got" >&2; exit 1; }
fi
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
COMMAND="scripts/real_encoder_study.sh${VALSE_FULL:+ existence.json}"

# run NAME OUTDIR STUDY_EXTRA_JSON [pairs.py --origin TEXT] -- PEER_FILE...: steps 1-4 into OUTDIR
run() {
    local name=$1 dir=$2 extra=$3; shift 3
    local origin=(); if [[ $1 == --origin ]]; then origin=(--origin "$2"); shift 2; fi
    shift   # --
    mkdir -p "$dir" "$WORK/$name"
    local imported=() f
    for f in "$@"; do
        local base; base=$(basename "$f"); base=${base%.*}
        "$NEGCLIP" import --data "$f" --out "$WORK/$name/$base.jsonl" --keep-missing-images --max-issues 3 >&2
        imported+=("$WORK/$name/$base.jsonl")
    done
    "$PYTHON" scripts/real_encoder/pairs.py "${origin[@]}" "$dir/pairs.jsonl" "$WORK/$name/pairs.counts.json" "${imported[@]}"
    OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} "$NEGCLIP" probe-layers --model "$MODEL" --data "$dir/pairs.jsonl" --split test \
        --task negated --no-sweep --out "$WORK/$name/probe" >&2
    cp "$WORK/$name/probe/report.json" "$dir/report.json.tmp" && mv "$dir/report.json.tmp" "$dir/report.json"
    # study.json: the counts, what the dump says about the BERT rows, this command (sorted keys)
    "$PYTHON" - "$WORK/$name/pairs.counts.json" "$WORK/$name/probe/dump.h5" "$dir/study.json" "$COMMAND" "$extra" <<'PY'
import json, os, sys
import h5py
counts = json.load(open(sys.argv[1]))
with h5py.File(sys.argv[2], "r") as f:
    attr = lambda k: f.attrs[k].decode() if isinstance(f.attrs[k], bytes) else str(f.attrs[k])
    dump = {k: attr(k) for k in ("layer_definition", "tokenizer", "model_weights_sha256", "truncated_captions")}
pairs = sum(s["presence_pairs"] + s["absence_pairs"] for s in counts["sources"].values())
study = {"format": "negclip.real-encoder-study 1", "command": sys.argv[4],
         "sources": counts["sources"], "records": counts["records"], "dump": dump}
study.update({k: v.replace("{pairs}", str(pairs)) for k, v in json.loads(sys.argv[5]).items()})
tmp = sys.argv[3] + ".tmp"
with open(tmp, "w") as out:
    json.dump(study, out, indent=2, sort_keys=True)
    out.write("\n")
os.replace(tmp, sys.argv[3])
PY
}

peers=()
for f in ccneg_conclip.json negationclip_coco.json negbench_mcq.csv negbench_retrieval.csv \
         negclip_valid_neg_clip.tsv negrefcocog.json valse_existence.json; do
    peers+=("Tests/Fixtures/peers/$f")
done
run excerpts "$OUT" '{"data_description": "The committed peer files in `Tests/Fixtures/peers/` (their README gives the source repository, path and commit of each)."}' -- "${peers[@]}"

if [[ -n $VALSE_FULL ]]; then
    run valse-full "$OUT/valse-full" "{\"title\": \"The whole VALSE existence file ({pairs} caption/negation pairs)\",
        \"introduction\": \"The same measurement on the whole real file that the committed VALSE excerpt is cut from: Heidelberg-NLP/VALSE \`data/existence.json\` at 2152d90d (sha256 \`$VALSE_SHA256\`; not committed, 420 kB: $VALSE_URL). Its pairs are in \`docs/real-encoder/valse-full/pairs.jsonl\`; regenerate with \`scripts/real_encoder_study.sh existence.json\`.\",
        \"data_description\": \"VALSE's whole existence.json (only the items 2 of 3 annotators validated, as VALSE's own evaluation).\"}" \
        --origin "whole real file (VALSE at 2152d90d)" -- "$VALSE_FULL"
fi
extra=()
[[ -f $OUT/valse-full/report.json ]] && extra=("$OUT/valse-full/report.json" "$OUT/valse-full/study.json")
"$PYTHON" scripts/real_encoder/render.py "$OUT/report.json" "$OUT/study.json" docs/real-encoder.md "${extra[@]}"
echo "wrote docs/real-encoder.md (from $OUT/report.json, $OUT/study.json${extra:+ and $OUT/valse-full/})"
