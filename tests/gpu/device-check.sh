#!/usr/bin/env bash
# The one script a GPU machine runs (issues 10, 11, 12): from binaries built on a development
# machine (configure --with-cuda --with-cuda-arch=90; make gpu-programs) and copied with
# ../shared/tools/device-bundle into .devbundle/, it runs
#   1. the op harness on CUDA against the CPU reference (tests/moelm-tests backend_ops),
#   2. the whole-model parity (gpu_parity: fp32 log-probs and gradients = CPU to 1e-4, MoE too),
#   3. compute-sanitizer memcheck and racecheck on the op harness,
#   4. the bf16 training curve: 200 updates on the shipped data-bin, bf16 against fp32
#      (valid loss within 2%),
#   5. the NCCL check (one GPU, one rank: communicator, all-reduce, all-to-all),
#   6. the benchmark (tests/bench/bench-gpu: train/eval/decode tokens/s, MFU, memory),
# and writes $OUT/summary.md (a table, printed last) and every log to $OUT. Each step has a
# time limit so the whole stays under 8 minutes on one H100.
# usage (on the GPU machine, from the repository root):
#   export LD_LIBRARY_PATH=$PWD/.devbundle/lib:$LD_LIBRARY_PATH; bash tests/gpu/device-check.sh
# Environment: OUT (default ./device-check-out), BIN (default .devbundle/bin).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$top/device-check-out}
bin=${BIN:-$top/.devbundle/bin}
mkdir -p "$out"
summary=$out/summary.md
: > "$summary"
export MOELM_SRCDIR=$top MOELM_BUILDDIR=$top/build MOELM_NO_PROGRESS=1
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >> "$summary"; }
printf '| step | result | seconds | detail |\n|---|---|---|---|\n' >> "$summary"

step() { # name, limit (s), log, command...
  local name=$1 limit=$2 log=$out/$3; shift 3
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$log" 2>&1
  rc=$?
  local secs=$((SECONDS - t0)) result=ok
  case $rc in 0) ;; 77) result=skipped ;; 124) result="TIMEOUT ($limit s)" ;; *) result="FAILED ($rc)" ;; esac
  LAST_RC=$rc
  LAST_ROW=("$name" "$result" "$secs")
}

export PATH=$PATH:/usr/local/cuda/bin
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
else
  echo "no nvidia-smi" > "$out/gpu.txt"
fi
echo "GPU: $(head -1 "$out/gpu.txt")" > "$out/header.txt"

# 1-2. the op harness and the model parity
step "op harness (CUDA vs CPU)" 150 harness.log "$bin/moelm-tests" backend_ops
row "${LAST_ROW[@]}" "$(grep -E '^cuda' "$out/harness.log" | tr '\n' ';' | cut -c1-300)"
step "model parity (fp32, bf16)" 90 parity.log "$bin/moelm-tests" gpu_parity
row "${LAST_ROW[@]}" "$(grep -oE '\[[^]]*\]' "$out/parity.log" | tr '\n' ' ' | cut -c1-300)"

# 3. sanitizers on a short harness run (the CUDA rows only)
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer $tool" 120 "sanitizer-$tool.log" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      "$bin/moelm-tests" backend_ops
    row "${LAST_ROW[@]}" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer-$tool.log" | tail -1)"
  done
else
  row "compute-sanitizer" skipped 0 "not installed"
fi

# 4. the bf16 curve: 200 updates, bf16 against fp32, valid loss within 2%
work=$out/curve
rm -rf "$work"; mkdir -p "$work"
common=(train "$top/data-bin/demo" --arch transformer_lm --decoder-layers 4 --decoder-embed-dim 256
        --decoder-ffn-embed-dim 1024 --decoder-attention-heads 4 --tokens-per-sample 256 --max-tokens 4096
        --optimizer adam --lr 0.001 --lr-scheduler inverse_sqrt --warmup-updates 50 --dropout 0.1
        --max-update 200 --log-interval 50 --validate-interval-updates 200 --no-save --device-id 0 --seed 1)
step "train 200 updates fp32" 100 curve-fp32.log "$bin/moelm" "${common[@]}" --fp32 --save-dir "$work/fp32"
f32=$(grep -oE 'valid on .valid. subset \| loss [0-9.]+' "$out/curve-fp32.log" | tail -1 | awk '{print $NF}')
row "${LAST_ROW[@]}" "valid loss $f32; $(grep -oE 'wps=[0-9]+' "$out/curve-fp32.log" | tail -1)"
step "train 200 updates bf16" 100 curve-bf16.log "$bin/moelm" "${common[@]}" --bf16 --save-dir "$work/bf16"
b16=$(grep -oE 'valid on .valid. subset \| loss [0-9.]+' "$out/curve-bf16.log" | tail -1 | awk '{print $NF}')
verdict=$(awk -v a="$f32" -v b="$b16" 'BEGIN { if (a == "" || b == "") print "no loss"; else { d = (b - a) / a; if (d < 0) d = -d; printf "%.2f%% apart: %s", 100 * d, d <= 0.02 ? "within 2%" : "OUTSIDE 2%" } }')
row "${LAST_ROW[@]}" "valid loss $b16 ($verdict); $(grep -oE 'wps=[0-9]+' "$out/curve-bf16.log" | tail -1)"

# 5. NCCL on one GPU
step "NCCL (1 GPU, 1 rank)" 60 nccl.log "$bin/nccl-check"
row "${LAST_ROW[@]}" "$(tr '\n' ';' < "$out/nccl.log" | cut -c1-200)"

# 6. the benchmark
step "benchmark (bf16)" 180 bench.log "$bin/bench-gpu" --steps 5
row "${LAST_ROW[@]}" "see bench.log"

{ cat "$out/header.txt"; echo; cat "$summary"; echo; grep -E '^\|' "$out/bench.log" 2>/dev/null; } > "$out/report.md"
cat "$out/report.md"
