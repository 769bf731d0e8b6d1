#!/usr/bin/env bash
# The main job on the shipped corpus, as a fairseq user would run it:
#   preprocess (SentencePiece BPE) → train a small transformer_lm → eval-lm with a context
#   window → generate from a few prompts.
# usage: tests/demo.sh BUILD_DIR [WORK_DIR]   (WORK_DIR default: ./demo-run, wiped first)
# Environment: DEMO_UPDATES (default 600), DEMO_THREADS (default: all cores).
set -euo pipefail
build=$(cd "${1:?usage: demo.sh BUILD_DIR [WORK_DIR]}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$PWD/demo-run}
moelm="$build/cli/moelm"
updates=${DEMO_UPDATES:-600}
threads=()
[ -n "${DEMO_THREADS:-}" ] && threads=(--threads "$DEMO_THREADS")

rm -rf "$work"
mkdir -p "$work"
text="$top/data-bin/text"

echo "== moelm preprocess (four-domain corpus, SentencePiece BPE, 2 workers)"
"$moelm" preprocess --only-source \
  --trainpref "$text/train.txt" --validpref "$text/valid.txt" --testpref "$text/test.txt" \
  --destdir "$work/data-bin" --bpe sentencepiece --nwordssrc 8000 --workers 2
"$moelm" info "$work/data-bin"

echo "== moelm train (transformer_lm, 4 layers x 256, $updates updates)"
"$moelm" train "$work/data-bin" --task language_modeling \
  --arch transformer_lm --decoder-layers 4 --decoder-embed-dim 256 --decoder-ffn-embed-dim 1024 \
  --decoder-attention-heads 4 --share-decoder-input-output-embed --dropout 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01 --clip-norm 0.0 \
  --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 \
  --tokens-per-sample 256 --sample-break-mode none --batch-size 8 \
  --max-update "$updates" --log-interval 50 --save-dir "$work/checkpoints" --no-epoch-checkpoints \
  "${threads[@]}"

echo "== moelm eval-lm (test split, context window 128)"
"$moelm" eval-lm "$work/data-bin" --path "$work/checkpoints/checkpoint_best.pt" \
  --gen-subset test --tokens-per-sample 256 --context-window 128 --batch-size 8 "${threads[@]}"

echo "== moelm generate (sampling, top-p 0.9)"
printf '%s\n' "The licence" "NAME" "#include <stdio.h>" | \
  "$moelm" generate "$work/data-bin" --path "$work/checkpoints/checkpoint_best.pt" \
    --beam 1 --sampling --sampling-topp 0.9 --max-len-b 40 --seed 7 --remove-bpe sentencepiece "${threads[@]}"
