#!/usr/bin/env bash
# The main job on the shipped four-domain corpus, written as fairseq's language_model_moe
# example with `fairseq-` replaced by `moelm ` (paths point at the shipped corpus, the model
# is small and --max-update short so it runs in minutes on 2 cores):
#   preprocess (SentencePiece BPE) → train a 4-expert hMoEup mixture → eval-lm with a
#   context window (and the per-expert report) → generate from every expert.
# usage: tests/demo.sh BUILD_DIR [WORK_DIR]   (WORK_DIR default: ./demo-run, wiped first)
# Environment: DEMO_UPDATES (default 600).
set -euo pipefail
build=$(cd "${1:?usage: demo.sh BUILD_DIR [WORK_DIR]}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$PWD/demo-run}
updates=${DEMO_UPDATES:-600}
PATH="$build/cli:$PATH"
TEXT="$top/data-bin/text"

rm -rf "$work"
mkdir -p "$work"
cd "$work"

echo "== moelm preprocess"
moelm preprocess \
    --only-source \
    --trainpref $TEXT/train.txt \
    --validpref $TEXT/valid.txt \
    --testpref $TEXT/test.txt \
    --destdir data-bin/mix \
    --bpe sentencepiece \
    --nwordssrc 8000 \
    --workers 2
moelm info data-bin/mix

echo "== moelm train (hMoEup, 4 experts, $updates updates)"
moelm train \
--ddp-backend='no_c10d'  data-bin/mix/ \
--max-update "$updates" \
--task language_model_moe \
--user-dir examples/language_model_moe/src \
--method hMoEup \
--arch transformer_lm \
--decoder-layers 2 --decoder-embed-dim 128 --decoder-ffn-embed-dim 512 --decoder-attention-heads 4 \
--tokens-per-sample 128 --sample-break-mode complete_doc \
--share-decoder-input-output-embed \
--optimizer adam \
--adam-betas '(0.9, 0.98)' \
--clip-norm 0.0 \
--lr-scheduler inverse_sqrt \
--warmup-init-lr 1e-07 \
--warmup-updates 100 \
--lr 0.002 \
--min-lr 1e-09 \
--dropout 0.1 \
--weight-decay 0.0 \
--criterion cross_entropy \
--max-tokens 2048 \
--num-experts 4 \
--mean-pool-gating-network \
--mean-pool-gating-network-encoder-dim 128 \
--mean-pool-gating-network-dropout 0.0 \
--log-interval 100 --no-epoch-checkpoints

echo "== moelm eval-lm (test split, context window 64, per-expert report)"
moelm eval-lm data-bin/mix/ \
--path checkpoints/checkpoint_best.pt \
--gen-subset test \
--max-sentences 2 \
--tokens-per-sample 128 \
--context-window 64 \
--task language_model_moe  \
--user-dir ./examples/language_model_moe/src/ \
--num-experts 4 \
--mean-pool-gating-network \
--mean-pool-gating-network-encoder-dim 128 \
--mean-pool-gating-network-dropout 0.0 \
--mixture-report

for k in 0 1 2 3; do
  echo "== moelm interactive --gen-expert $k"
  printf '%s\n' "The" "#include" | \
  moelm interactive data-bin/mix \
      --path checkpoints/checkpoint_best.pt \
      --beam 1 --sampling --sampling-topp 0.9 --remove-bpe sentencepiece --max-len-b 30 --seed 1 \
      --task language_model_moe --user-dir examples/language_model_moe/src \
      --method hMoEup --mean-pool-gating-network \
      --mean-pool-gating-network-encoder-dim 128 \
      --mean-pool-gating-network-dropout 0.0 \
      --num-experts 4 \
      --gen-expert $k 2>/dev/null | grep -E '^(S|D)-'
done
