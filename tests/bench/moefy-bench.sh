#!/usr/bin/env bash
# MoEfication on the shipped corpus: valid perplexity and FFN time at k/E = 10, 20, 30, 50 and
# 100% for every split x selection, next to the dense model it came from.
#   moefy-bench.sh MOELM BENCH_MOEFY SRCDIR WORKDIR
# Trains a dense transformer_lm per activation (4 layers x 256, FFN 1280, 128 tokens per
# sample, BENCH_UPDATES updates, default 600) unless WORKDIR/ck-ACT/checkpoint_last.pt exists,
# moefies it into E experts (BENCH_EXPERTS, default "40 20": experts of 32 and 64 neurons) at
# every split x selection, evaluates k = 10, 20, 30, 50, 100% of E with eval-lm --moefy-top-k,
# and times the FFNs with bench-moefy (the param-cluster checkpoints: the time depends on the
# selector and k, not on the split). Everything runs with --threads 1 under nice -n 19 (the
# machine is shared). Environment: BENCH_ACTS (default "relu gelu"), BENCH_UPDATES,
# BENCH_TOKENS (moefy --moefy-tokens, default 32768).
set -euo pipefail
moelm=${1:?usage: moefy-bench.sh MOELM BENCH_MOEFY SRCDIR WORKDIR}
bench=${2:?}
src=${3:?}
work=${4:?}
data=$src/data-bin/demo
acts=${BENCH_ACTS:-relu gelu}
updates=${BENCH_UPDATES:-600}
tokens=${BENCH_TOKENS:-32768}
experts=${BENCH_EXPERTS:-40 20}
mkdir -p "$work"
cd "$work"
run() { nice -n 19 "$@"; }

ppl() { # eval-lm's valid perplexity of checkpoint $1 (extra options after it)
  local ckpt=$1
  shift
  run "$moelm" eval-lm "$data" --path "$ckpt" --gen-subset valid --threads 1 "$@" | sed -n 's/.*Perplexity: //p'
}

for act in $acts; do
  if [ ! -f "ck-$act/checkpoint_last.pt" ]; then
    echo "== training the dense $act model ($updates updates)" >&2
    run "$moelm" train "$data" --arch transformer_lm \
      --decoder-layers 4 --decoder-embed-dim 256 --decoder-ffn-embed-dim 1280 --decoder-attention-heads 4 \
      --activation-fn "$act" --share-decoder-input-output-embed \
      --tokens-per-sample 128 --sample-break-mode none --max-tokens 2048 \
      --optimizer adam --adam-betas '(0.9, 0.98)' --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 \
      --warmup-init-lr 1e-07 --dropout 0.1 --max-update "$updates" --save-dir "ck-$act" --no-epoch-checkpoints \
      --log-interval 100 --threads 1 --seed 1 2> "train-$act.log"
  fi
  dense=ck-$act/checkpoint_last.pt
  base=$(ppl "$dense")
  for E in $experts; do
    ks="$((E / 10)) $((E / 5)) $((3 * E / 10)) $((E / 2)) $E"
    echo "### $act, $E experts of $((1280 / E)) neurons: valid perplexity (dense: $base)"
    echo
    echo "| split | selection | $(for k in $ks; do printf '%d%% | ' $((100 * k / E)); done)"
    echo "|---|---|$(for k in $ks; do printf -- '---|'; done)"
    timed=()
    for split in param-cluster coactivation; do
      for select in similarity mlp groundtruth; do
        out=$act-E$E-$split-$select.pt
        if [ ! -f "$out" ]; then
          run "$moelm" moefy "$data" --path "$dense" --save "$out" --num-experts "$E" --top-k $((E / 5)) \
            --split "$split" --select "$select" --moefy-tokens "$tokens" --threads 1 2> "moefy-$act-E$E-$split-$select.log"
        fi
        label=$select
        [ "$select" != groundtruth ] || label="groundtruth (upper bound)"
        row="| $split | $label |"
        for k in $ks; do
          row="$row $(ppl "$out" --moefy-top-k "$k") |"
        done
        echo "$row"
        [ "$split" != param-cluster ] || timed+=("$out")
      done
    done
    echo
    run "$bench" "$data" "$dense" "${timed[@]}" --ks "${ks// /,}" --tokens 1024 --reps 5 --threads 1
    echo
  done
done
