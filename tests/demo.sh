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
# the corpus's domain labels (one per document) beside the binarized splits: eval-lm's
# --mixture-report then says which expert took which domain
cp $TEXT/train.domains $TEXT/valid.domains $TEXT/test.domains data-bin/mix/

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
--mixture-report | tee eval-lm.log

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
      --gen-expert $k 2>/dev/null | grep -E '^(S|D)-' | tee -a generate.log
done

# ---- what the run shows, and where it is ----------------------------------------------
mixture_ppl=$(sed -n 's/.*| Loss (base 2): [0-9.]*, Perplexity: \([0-9.]*\).*/\1/p' eval-lm.log)
best_line=$(sed -n 's/.*| expert \([0-9]*\) alone (prior ignored): loss (base 2) [0-9.]*, perplexity \([0-9.]*\);.*/\2 \1/p' eval-lm.log |
  sort -g | head -1)
echo
echo "== summary"
echo "outputs, in $work:"
echo "  data-bin/mix/       the binarized corpus (dict.txt, spm.model, {train,valid,test}.{bin,idx}, *.domains)"
echo "  checkpoints/        checkpoint_best.pt and checkpoint_last.pt of the 4-expert mixture"
echo "  eval-lm.log         the test split's report; generate.log: a sample from every expert"
echo "test perplexity: the mixture ${mixture_ppl}; the best single expert (expert ${best_line#* } alone) ${best_line% *}"
echo "which expert took which domain of the test split (documents, each given to the expert of"
echo "its highest posterior):"
sed -n 's/.*| domain \([^ ]*\) (\([0-9]*\) documents): \(.*\)/\1 \2 \3/p' eval-lm.log |
  awk '{ printf "  %-10s %5s docs:", $1, $2; for (i = 3; i <= NF; i += 3) { n = $(i + 2); sub(/,$/, "", n); printf "  expert %s %5s", $(i + 1), n } printf "\n" }'
sed -n 's/.*| domain accuracy (documents by their posterior, best one-to-one matching of experts to domains): /  domain accuracy: /p' eval-lm.log
cat <<EOF
next:
  moelm eval-lm data-bin/mix --path checkpoints/checkpoint_best.pt --gen-subset valid --output-word-probs | less
  moelm generate data-bin/mix --path checkpoints/checkpoint_best.pt --gen-expert auto --sampling --remove-bpe sentencepiece
  moelm train data-bin/mix --task language_model_moe --method hMoEup --num-experts 4 --domain-discovery ...
                     # experts that find the domains (docs/mixtures.md); more in docs/index.md
EOF
