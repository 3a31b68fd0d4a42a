#!/usr/bin/env bash
# Side-by-side benchmark: negclip-bench and the PyTorch peer on the same random ViT-B/32-shaped CLIP,
# same captions (token ids written by negclip-bench), 2 threads each. Prints both JSON reports.
#   scripts/peers/bench.sh [python]      (python: an interpreter with torch + transformers; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
W=${BENCH_DIR:-/tmp/negclip-bench}
mkdir -p "$W"
swift build -c release --product negclip-bench >/dev/null
[[ -f $W/vitb32/model.safetensors ]] || $PY scripts/peers/torch_peer.py make-checkpoint --shape vit-b-32 --out "$W/vitb32" >/dev/null
B=.build/release/negclip-bench
echo "== negclip text (batch 32) + vision (batch 16)"
$B encode --model "$W/vitb32" --texts 512 --batch 32 --images 64 --image-batch 16 --ids-out "$W/ids.json" --profile
echo "== transformers text, dynamic padding (batch 32)"
$PY scripts/peers/torch_peer.py encode-text --model "$W/vitb32" --ids "$W/ids.json" --batch 32 --padding longest
echo "== transformers text, padded to 77 (batch 32)"
$PY scripts/peers/torch_peer.py encode-text --model "$W/vitb32" --ids "$W/ids.json" --batch 32 --padding max_length
echo "== transformers vision (batch 16)"
$PY scripts/peers/torch_peer.py encode-images --model "$W/vitb32" --count 64 --batch 16
