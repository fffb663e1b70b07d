#!/usr/bin/env bash
# Fuzzing: builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time, then prints
# one line per target (executions, seconds, crashes). Exits non-zero if any target found a
# crash, a timeout or an out-of-memory input (libFuzzer writes it to fuzz/artifacts/TARGET/).
# Not run in CI.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 60 seconds each, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the nightly flags
# cargo-fuzz passes are allowed with RUSTC_BOOTSTRAP=1, set here. FUZZ_SANITIZER (default
# `none`: the crates forbid unsafe code, and the runs are twice as fast without ASan) is passed
# to `--sanitizer`. New corpus entries go to fuzz/target/corpus/TARGET (not committed); the
# seeds in fuzz/corpus/TARGET are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(config task model_response); fi
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi

for target in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$sanitizer" "$target"
done

logs=fuzz/target/logs
mkdir -p "$logs"
summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/target/corpus/$target"
  log="$logs/$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  status=ok
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" \
    "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=FAILED
    failed=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tr '\n' ' ')
  line=$(printf '%-16s %-6s %12s execs %6ss' "$target" "$status" "${execs:-?}" "${took:-?}")
  if [ -n "$artifacts" ]; then line="$line  artifact: $artifacts"; fi
  if [ "$status" = FAILED ] && [ -z "$artifacts" ]; then
    line="$line  (no artifact: see $log)"
  fi
  summary+=("$line")
done

echo
echo "fuzz summary (${seconds}s per target, sanitizer: $sanitizer)"
printf '%s\n' "${summary[@]}"
exit "$failed"
