#!/usr/bin/env bash
# Do the experts of a sequence-level mixture find the domains? Trains K = 4 mixtures and
# dense models on up to three four-domain corpora and, per run, prints the valid perplexity
# and the held-out domain accuracy: every valid document goes to the expert with the highest
# posterior given its first 64 tokens (bench-mixture), experts are matched one to one to the
# domains (one expert for everything scores about the largest domain's share), and the
# per-domain average weighs the domains equally. Ends with a markdown table of means and
# standard deviations over the seeds.
#
# Corpora: demo (the shipped data-bin/demo, labels data-bin/text/valid.domains), docs and code
# (tests/bench/make-corpora.sh, built and binarized into WORKDIR on first use, with a
# SentencePiece model that keeps indentation: preprocess --sentencepiece-keep-whitespace; they
# need the Debian packages that script names).
# Models: dense (the mixture's number of updates), dense-eq (a dense model of the mixture's
# compute: updates x (1 + K/3), since a hard mixture's E-step runs K forward passes, a third
# of a training step each, for every block it trains), a --method (hMoEup, sMoEup, hMoElp,
# sMoElp), a method with +dd (--domain-discovery), +ds (--domain-discovery with shared FFNs:
# --mixture-expert-ffn 0, the switch before expert FFNs), or with +db (--mixture-estep document
# --mixture-balance 4: the switch's E-step options alone, shared FFNs and no unigram start).
# usage: mixture-bench.sh MOELM BENCH_MIXTURE SRCDIR WORKDIR
# Environment: BENCH_UPDATES (800), BENCH_SEEDS ("1 2 3"), BENCH_CORPORA ("demo docs code"),
#   BENCH_MODELS ("dense dense-eq hMoEup hMoEup+dd"), BENCH_THREADS (1), BENCH_EXTRA (more
#   train options for every mixture).
# Runs are kept in WORKDIR/CORPUS/MODEL-sSEED and not trained again (delete them to redo).
# A WORKDIR whose corpora were built by another version of make-corpora.sh is refused.
set -euo pipefail
moelm=$1 tool=$2 src=$3 work=$4
updates=${BENCH_UPDATES:-800}
seeds=${BENCH_SEEDS:-"1 2 3"}
corpora=${BENCH_CORPORA:-"demo docs code"}
models=${BENCH_MODELS:-"dense dense-eq hMoEup hMoEup+dd"}
threads=${BENCH_THREADS:-1}
K=4
mkdir -p "$work"

# The corpora, data-bins and runs in WORKDIR belong to the make-corpora.sh that built them
# (its checksum is kept in WORKDIR/corpora.sum): after that script changes they are stale.
corpora_sum=$(cksum <"$src/tests/bench/make-corpora.sh")
if [ -d "$work/corpora" ] && [ "$(cat "$work/corpora.sum" 2>/dev/null)" != "$corpora_sum" ]; then
  echo "mixture-bench.sh: $work/corpora was built by another tests/bench/make-corpora.sh;" \
    "delete $work/corpora, $work/bin-docs, $work/bin-code, $work/docs and $work/code to redo them" >&2
  exit 1
fi

# docs and code are binarized with a SentencePiece model that keeps indentation and runs of
# spaces: a man page's 7-column indent and Python's blocks are part of what tells the domains
# apart (tests/bench/NOTES.md, issue 17). A data-bin made with other options is stale.
pp_opts="--bpe sentencepiece --sentencepiece-keep-whitespace --nwordssrc 8000 --workers 1"

# data-bin of a corpus (building it when needed)
data_of() {
  case $1 in
    demo) echo "$src/data-bin/demo" ;;
    docs|code)
      local bin="$work/bin-$1"
      if [ -f "$bin/dict.txt" ] && [ "$(cat "$bin/bench-preprocess.opts" 2>/dev/null)" != "$pp_opts" ]; then
        echo "mixture-bench.sh: $bin was binarized with other options than '$pp_opts';" \
          "delete $bin and $work/$1 to redo them" >&2
        exit 1
      fi
      if [ ! -f "$bin/dict.txt" ]; then
        if [ ! -f "$work/corpora/$1/train.txt" ]; then
          bash "$src/tests/bench/make-corpora.sh" "$work/corpora" >&2
          echo "$corpora_sum" >"$work/corpora.sum"
        fi
        rm -rf "$bin"
        # shellcheck disable=SC2086
        "$moelm" preprocess --only-source --trainpref "$work/corpora/$1/train.txt" \
          --validpref "$work/corpora/$1/valid.txt" --testpref "$work/corpora/$1/test.txt" \
          --destdir "$bin" $pp_opts >"$work/preprocess-$1.log" 2>&1
        cp "$work/corpora/$1/"{train,valid,test}.domains "$bin/"
        echo "$pp_opts" >"$bin/bench-preprocess.opts"
      fi
      echo "$bin" ;;
    *) echo "mixture-bench.sh: unknown corpus $1" >&2; exit 2 ;;
  esac
}
labels_of() { case $1 in demo) echo "$src/data-bin/text/valid.domains" ;; *) echo "$(data_of "$1")/valid.domains" ;; esac; }

common=(--arch transformer_lm --decoder-layers 2 --decoder-embed-dim 128 --decoder-ffn-embed-dim 512
  --decoder-attention-heads 4 --share-decoder-input-output-embed --tokens-per-sample 128
  --sample-break-mode complete_doc --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)'
  --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 100 --warmup-init-lr 1e-07 --dropout 0.1
  --log-interval 100 --no-epoch-checkpoints --threads "$threads")

# train_args MODEL: the options of a model
train_args() {
  local m=${1%+d[dbs]} dd=
  [[ $1 == *+dd ]] && dd=--domain-discovery
  [[ $1 == *+ds ]] && dd="--domain-discovery --mixture-expert-ffn 0"
  [[ $1 == *+db ]] && dd="--mixture-estep document --mixture-balance 4"
  case $m in
    dense) echo "--task language_modeling --max-update $updates" ;;
    dense-eq) echo "--task language_modeling --max-update $((updates * (3 + K) / 3))" ;;
    *) local gate=
       [[ $m == *lp ]] && gate="--mean-pool-gating-network --mean-pool-gating-network-dropout 0.0 --gating-context 128"
       echo "--task language_model_moe --method $m --num-experts $K --max-update $updates $gate $dd ${BENCH_EXTRA:-}" ;;
  esac
}

# every data-bin first: a stale one stops the run before results.txt is emptied
for c in $corpora; do data_of "$c" >/dev/null; done
results="$work/results.txt"
: >"$results"
for c in $corpora; do
  data=$(data_of "$c")
  for m in $models; do
    for s in $seeds; do
      run="$work/$c/$m-s$s"
      mkdir -p "$work/$c"
      if [ ! -f "$run/checkpoint_last.pt" ]; then
        # shellcheck disable=SC2046
        "$moelm" train "$data" "${common[@]}" $(train_args "$m") --seed "$s" --save-dir "$run" >"$run.log" 2>&1
      fi
      "$tool" "$data" "$run/checkpoint_last.pt" "$(labels_of "$c")" --threads "$threads" >"$run.eval"
      wall=$(grep -o 'done training in [0-9.]* seconds' "$run.log" | grep -o '[0-9.]*' || echo 0)
      line=$(grep '^RESULT' "$run.eval" | sed 's/^RESULT //')
      echo "corpus=$c model=$m seed=$s wall=$wall $line" | tee -a "$results"
    done
  done
done

# means (and standard deviations) over the seeds, one row per corpus and model
echo
echo "| corpus | model | valid ppl | accuracy | per-domain | each domain (matched share) | train s |"
echo "|---|---|---|---|---|---|---|"
awk '
  function stat(key,   n, m, v, i) { n = cnt[key]; m = sum[key] / n; v = sq[key] / n - m * m
                                      return sprintf("%.3f ± %.3f", m, v > 0 ? sqrt(v) : 0) }
  { row = ""; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    key = f["corpus"] " " f["model"]
    if (!(key in seen)) { seen[key] = 1; order[++rows] = key; doms[key] = "" }
    cnt[key]++
    for (i = 1; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] ~ /^(corpus|model|seed)$/) continue
      k = key SUBSEP kv[1]; sum[k] += kv[2]; sq[k] += kv[2] * kv[2]; cnt[k]++
      if (kv[1] !~ /^(wall|ppl|acc|per_domain)$/ && index(" " doms[key] " ", " " kv[1] " ") == 0)
        doms[key] = doms[key] " " kv[1]
    }
    delete f }
  END {
    for (r = 1; r <= rows; r++) {
      key = order[r]; split(key, km, " ")
      acc = (key SUBSEP "acc") in cnt ? stat(key SUBSEP "acc") : "-"
      per = (key SUBSEP "per_domain") in cnt ? stat(key SUBSEP "per_domain") : "-"
      each = ""; n = split(doms[key], dl, " ")
      for (i = 1; i <= n; i++) each = each (i > 1 ? ", " : "") dl[i] " " sprintf("%.2f", sum[key SUBSEP dl[i]] / cnt[key SUBSEP dl[i]])
      printf "| %s | %s | %s | %s | %s | %s | %.0f |\n", km[1], km[2], stat(key SUBSEP "ppl"), acc, per,
             each == "" ? "-" : each, sum[key SUBSEP "wall"] / cnt[key SUBSEP "wall"]
    }
  }' "$results"
