#!/usr/bin/env bash
# Does a sequence-level mixture specialise by domain? Trains hMoEup, sMoEup and hMoElp with
# K = 4 on the shipped four-domain corpus, and a dense model with the same settings and
# number of updates; then prints, per mixture, the share of each domain's held-out documents
# sent to each expert (posterior given the document's opening tokens), the domain accuracy
# under the best one-to-one matching (one expert for everything scores about 0.25), and
# the valid perplexity next to the dense model's.
# usage: mixture-bench.sh MOELM BENCH_MIXTURE SRCDIR WORKDIR
# Environment: BENCH_UPDATES (default 800), BENCH_METHODS (default "hMoEup sMoEup hMoElp").
set -euo pipefail
moelm=$1 tool=$2 src=$3 work=$4
updates=${BENCH_UPDATES:-800}
methods=${BENCH_METHODS:-"hMoEup sMoEup hMoElp"}
data="$src/data-bin/demo"
mkdir -p "$work"
common=(--arch transformer_lm --decoder-layers 2 --decoder-embed-dim 128 --decoder-ffn-embed-dim 512
  --decoder-attention-heads 4 --share-decoder-input-output-embed --tokens-per-sample 128
  --sample-break-mode complete_doc --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)'
  --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 --dropout 0.1
  --max-update "$updates" --log-interval 100 --no-epoch-checkpoints --seed 1)

run() { # name, extra args...
  local name=$1; shift
  if [ ! -f "$work/$name/checkpoint_last.pt" ]; then
    "$moelm" train "$data" "${common[@]}" --save-dir "$work/$name" "$@" > "$work/$name.log" 2>&1
  fi
  echo "### $name ($updates updates)"
  "$tool" "$data" "$work/$name/checkpoint_last.pt" "$src/data-bin/text/valid.domains"
  echo
}

run dense --task language_modeling
for m in $methods; do
  gate=()
  [[ $m == *lp ]] && gate=(--mean-pool-gating-network --mean-pool-gating-network-dropout 0.0 --gating-context 128)
  run "$m" --task language_model_moe --method "$m" --num-experts 4 "${gate[@]}"
done
