#!/usr/bin/env bash
# Owns: running every cargo-fuzz target in fuzz/ for SECONDS each (default
# 60), JOBS at a time (default 2), and saying per target how many inputs
# it ran and whether it found anything.
#
#   scripts/fuzz.sh [SECONDS]          e.g. scripts/fuzz.sh 20 (the CI run)
#   FUZZ_JOBS=2 FUZZ_TARGETS="sig_blob digests" scripts/fuzz.sh 180
#
# The fuzz crate is built once (cargo +nightly fuzz build, libFuzzer with
# AddressSanitizer), then the built binaries run directly. Each target
# starts from its checked-in seeds (fuzz/seeds/TARGET, read-only) and the
# corpus earlier runs grew (fuzz/corpus/TARGET, not checked in). Logs go to
# fuzz/logs/TARGET.log; a crash, panic, timeout or OOM leaves its input in
# fuzz/artifacts/TARGET/ and makes the script exit 1; reproduce it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
JOBS="${FUZZ_JOBS:-2}"
case "$SECONDS_EACH" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] (a whole number, got '$SECONDS_EACH')" >&2; exit 2 ;;
esac

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (libFuzzer needs -Z flags)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build
BIN_DIR="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
TARGETS="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
mkdir -p fuzz/logs

# Runs one target; prints its one-line summary.
run_one() {
  local target="$1" seconds="$2" bin_dir="$3"
  local corpus="fuzz/corpus/$target" artifacts="fuzz/artifacts/$target/"
  local log="fuzz/logs/$target.log"
  mkdir -p "$corpus" "$artifacts"
  local status=0
  "$bin_dir/$target" "$corpus" "fuzz/seeds/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts" >"$log" 2>&1 || status=$?
  local runs rate
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    printf '%-22s ok     %10s execs %7s/s\n' "$target" "${runs:-?}" "${rate:-?}"
  else
    printf '%-22s FAILED (exit %s, see %s and %s)\n' "$target" "$status" "$log" "$artifacts"
    grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | sed 's/^/    /' || true
  fi
  return "$status"
}
export -f run_one

echo "fuzz: $(echo $TARGETS | wc -w) targets, ${SECONDS_EACH}s each, $JOBS at a time"
SUMMARY=$(mktemp)
trap 'rm -f "$SUMMARY"' EXIT
STATUS=0
printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {} "$SECONDS_EACH" "$BIN_DIR" \
  | tee "$SUMMARY" || STATUS=$?
# One closing line in the form test runners end with: targets without and
# with a finding.
echo "fuzz: $(grep -c ' ok ' "$SUMMARY" || true) passed, $(grep -c ' FAILED ' "$SUMMARY" || true) failed"
if [ "$STATUS" -ne 0 ]; then
  echo "fuzz: FINDINGS above (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
