#!/usr/bin/env bash
# moelm preprocess throughput with --workers 1 and 2 (run by `make bench`, not `make check`).
#
#   preprocess-bench.sh MOELM SRCDIR WORKDIR
#
# Builds a corpus of >= 50 MB by repeating the shipped corpus (data-bin/text/train.txt) with
# its lines shuffled (a fixed seed per copy, so every run reads the same bytes), or from
# generated text when the corpus is absent. Then, for plain (pre-tokenised, whitespace)
# input and for --bpe sentencepiece with a given model, runs preprocess with 1 and 2
# workers (best of REPEAT runs each), checks that both give the same bytes, and prints
# MB/s and the speed-up.
#
# The machine may be shared: a calibration row runs two independent single-worker
# preprocesses at once; their combined speed-up is the most 2 workers can get right now.
set -euo pipefail

MOELM=${1:?usage: preprocess-bench.sh MOELM SRCDIR WORKDIR}
SRCDIR=${2:?usage: preprocess-bench.sh MOELM SRCDIR WORKDIR}
WORK=${3:?usage: preprocess-bench.sh MOELM SRCDIR WORKDIR}
MIN_MB=${BENCH_MIN_MB:-50}
REPEAT=${BENCH_REPEAT:-3}
SPM=${BENCH_SPM:-1}

mkdir -p "$WORK"
CORPUS="$WORK/corpus.txt"
SHIPPED="$SRCDIR/data-bin/text/train.txt"

make_corpus() {
  local min_bytes=$((MIN_MB * 1000 * 1000)) copy=0
  : >"$CORPUS.tmp"
  if [ -s "$SHIPPED" ]; then
    while [ "$(stat -c %s "$CORPUS.tmp")" -lt "$min_bytes" ]; do
      copy=$((copy + 1))
      shuf --random-source=<(yes "moelm-bench-$copy") "$SHIPPED" >>"$CORPUS.tmp"
    done
    echo "corpus: $copy shuffled copies of $SHIPPED"
  else
    awk -v want="$min_bytes" 'BEGIN {
      srand(1); n = 0
      while (n < want) {
        if (rand() < 0.03) { print ""; n += 1; continue }
        k = 1 + int(rand() * 24); line = ""
        for (i = 0; i < k; i++) { u = rand(); line = line (i ? " " : "") "w" int(30000 * u * u * u) }
        print line; n += length(line) + 1
      }
    }' >"$CORPUS.tmp"
    echo "corpus: generated text ($SHIPPED is absent)"
  fi
  mv "$CORPUS.tmp" "$CORPUS"
}

[ -s "$CORPUS" ] && [ "$(stat -c %s "$CORPUS")" -ge $((MIN_MB * 1000 * 1000)) ] || make_corpus
BYTES=$(stat -c %s "$CORPUS")
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "corpus: $CORPUS, $MB MB, $(wc -l <"$CORPUS") lines; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$CORPUS" >/dev/null # in the page cache for every run

now() { date +%s.%N; }

# run_one DEST WORKERS ARGS...: "WALL CPU" seconds of one preprocess run (CPU = user + sys of
# all its threads; "-" without GNU time)
run_one() {
  local dest=$1 workers=$2
  shift 2
  rm -rf "$dest"
  local t0 t1 cpu=-
  t0=$(now)
  if [ -x /usr/bin/time ]; then
    LOGLEVEL=WARNING /usr/bin/time -f "%U %S" -o "$WORK/cpu.txt" "$MOELM" preprocess --only-source \
      --trainpref "$CORPUS" --destdir "$dest" --workers "$workers" "$@" >/dev/null 2>"$WORK/stderr.log" ||
      { cat "$WORK/stderr.log" >&2; exit 1; }
    cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/cpu.txt")
  else
    LOGLEVEL=WARNING "$MOELM" preprocess --only-source --trainpref "$CORPUS" --destdir "$dest" \
      --workers "$workers" "$@" >/dev/null 2>"$WORK/stderr.log" || { cat "$WORK/stderr.log" >&2; exit 1; }
  fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v c="$cpu" 'BEGIN { printf "%.3f %s", b - a, c }'
}

# best_of DEST WORKERS ARGS...: the fastest (wall) of REPEAT runs, "WALL CPU"
best_of() {
  local best="" t
  for _ in $(seq "$REPEAT"); do
    t=$(run_one "$@")
    best=$(awk -v a="$best" -v b="$t" 'BEGIN { split(a, x, " "); split(b, y, " ");
      print (a == "" || y[1] < x[1]) ? b : a }')
  done
  echo "$best"
}

same_output() {
  local f
  for f in dict.txt train.bin train.idx; do
    cmp -s "$1/$f" "$2/$f" || { echo "DIFFERENT $f between $1 and $2" >&2; return 1; }
  done
}

rows=()
row() { rows+=("$(printf '%-28s %8s %8s %8s %9s %9s' "$1" "$2" "$3" "$4" "$5" "$6")"); }
mbps() { awk -v mb="$MB" -v s="$1" 'BEGIN { printf "%.1f", mb / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

# CPU the machine gives two busy threads for a second right now (200% = two free cores).
probe() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%P" sh -c '(timeout 1 sh -c "while :; do :; done") & timeout 1 sh -c "while :; do :; done"; wait' 2>&1 |
      tail -1
  else
    echo "?"
  fi
}

bench_mode() {
  local label=$1
  shift
  echo "$label: two busy threads get $(probe) CPU"
  local r1 r2 t1 t2
  r1=$(best_of "$WORK/out-1" 1 "$@")
  r2=$(best_of "$WORK/out-2" 2 "$@")
  same_output "$WORK/out-1" "$WORK/out-2"
  t1=${r1% *} t2=${r2% *}
  row "$label" 1 "$t1" "${r1#* }" "$(mbps "$t1")" "1.00x"
  row "$label" 2 "$t2" "${r2#* }" "$(mbps "$t2")" "$(ratio "$t1" "$t2")"
}

# Calibration: two independent 1-worker runs side by side (same work as 2 workers, twice).
calibrate() {
  echo "calibration: two busy threads get $(probe) CPU"
  local best="" t0 t1 t solo
  solo=$(best_of "$WORK/cal-solo" 1)
  solo=${solo% *}
  for _ in $(seq "$REPEAT"); do
    rm -rf "$WORK/cal-a" "$WORK/cal-b"
    t0=$(now)
    LOGLEVEL=WARNING "$MOELM" preprocess --only-source --trainpref "$CORPUS" --destdir "$WORK/cal-a" \
      >/dev/null 2>&1 &
    LOGLEVEL=WARNING "$MOELM" preprocess --only-source --trainpref "$CORPUS" --destdir "$WORK/cal-b" \
      >/dev/null 2>&1
    wait
    t1=$(now)
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
  done
  # Two runs' worth of work in `best` seconds, against one run in `solo`.
  row "calibration: 2 procs x 1" 1+1 "$best" - "$(awk -v mb="$MB" -v s="$best" 'BEGIN { printf "%.1f", 2 * mb / s }')" \
    "$(awk -v a="$solo" -v b="$best" 'BEGIN { printf "%.2fx", 2 * a / b }')"
}

bench_mode "plain (whitespace words)"
if [ "$SPM" = 1 ]; then
  MODEL="$WORK/spm-model/spm.model"
  if [ ! -s "$MODEL" ]; then
    # A model trained once on the shipped corpus (or the first 5 MB of the benchmark corpus).
    rm -rf "$WORK/spm-model"
    TRAIN="$SHIPPED"
    [ -s "$TRAIN" ] || { head -c 5000000 "$CORPUS" >"$WORK/spm-train.txt"; TRAIN="$WORK/spm-train.txt"; }
    LOGLEVEL=WARNING "$MOELM" preprocess --only-source --trainpref "$TRAIN" --destdir "$WORK/spm-model" \
      --bpe sentencepiece --nwordssrc 8000 --workers 2 --dict-only >/dev/null
  fi
  bench_mode "--bpe sentencepiece (model)" --bpe sentencepiece --sentencepiece-model "$MODEL"
fi
calibrate

echo
printf '%-28s %8s %8s %8s %9s %9s\n' "input" "workers" "seconds" "CPU s" "MB/s" "speed-up"
printf '%s\n' "${rows[@]}"
