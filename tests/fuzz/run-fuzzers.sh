#!/usr/bin/env bash
# Run every libFuzzer harness for a bounded time (CI: ./quickstart test runs this when clang
# is installed). Builds them in BUILD_FUZZ (default build-fuzz) with
# `configure --enable-fuzzers CC=clang`, then runs each for FUZZ_SECONDS (default 30) from a
# copy of its seed corpus, so new inputs never land among the seeds. A crash, a leak, a
# sanitizer report or a harness abort fails the script and keeps the reproducer.
#   tests/fuzz/run-fuzzers.sh [harness...]     (default: all of them)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_FUZZ:-$top/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
jobs=${JOBS:-$(nproc)}
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(dict idx safetensors checkpoint)

command -v clang >/dev/null || { echo "run-fuzzers: clang not found: skipped" >&2; exit 0; }
mkdir -p "$build"
if [ ! -f "$build/Makefile" ]; then
  (cd "$build" && "$top/configure" --enable-fuzzers --disable-werror --without-cuda CC=clang CXX=clang++ \
     ${FUZZ_CONFIGURE_FLAGS:-} >configure.out) || { cat "$build/configure.out"; exit 1; }
fi
make -C "$build" -j"$jobs" $(printf 'tests/fuzz/fuzz-%s ' "${harnesses[@]}") >"$build/fuzz-build.log" 2>&1 ||
  { tail -n 50 "$build/fuzz-build.log"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/moelm-fuzz-XXXXXX")
status=0
for h in "${harnesses[@]}"; do
  mkdir -p "$work/$h/corpus" "$work/$h/artifacts"
  cp "$top/tests/fuzz/corpus/$h/"* "$work/$h/corpus/"
  echo "run-fuzzers: fuzz-$h for ${seconds}s"
  if ! ASAN_OPTIONS=detect_leaks=1 "$build/tests/fuzz/fuzz-$h" -max_total_time="$seconds" -print_final_stats=1 \
       -artifact_prefix="$work/$h/artifacts/" "$work/$h/corpus" >"$work/$h/log" 2>&1; then
    echo "run-fuzzers: fuzz-$h FAILED; reproduce with $build/tests/fuzz/fuzz-$h $(ls "$work/$h/artifacts/"* 2>/dev/null | head -n 1)" >&2
    tail -n 60 "$work/$h/log" >&2
    status=1
    continue
  fi
  grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/$h/log" | tail -n 2 | sed "s/^/  fuzz-$h: /"
done
[ $status -ne 0 ] || rm -rf "$work"
exit $status
