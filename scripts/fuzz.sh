#!/usr/bin/env bash
# Fuzzes hyperhive's parsers with cargo fuzz (libFuzzer): each target of
# fuzz/ for SECONDS (default 600), one after another, then a summary. Not
# part of scripts/test.sh (which only checks that the targets compile).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 60 names
#
# cargo-fuzz is installed from crates.io into tools/cargo-fuzz when missing.
# This machine has only a stable toolchain, and cargo fuzz builds with
# nightly-only rustc flags (-Zsanitizer=address and friends): RUSTC_BOOTSTRAP=1
# below lets stable rustc accept them. Targets are built as cargo fuzz does
# by default: optimized, with debug assertions and overflow checks, under
# AddressSanitizer (FUZZ_SANITIZER=none to go without).
#
# Inputs: the committed seeds (fuzz/seeds/TARGET), seeds made here from the
# golden transcript and the model server's scripts, and the corpus earlier
# runs grew (fuzz/corpus/TARGET, not committed). A crash is saved under
# fuzz/artifacts/TARGET/; replay it with
#   RUSTC_BOOTSTRAP=1 tools/cargo-fuzz/bin/cargo-fuzz fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-600}
[ $# -gt 0 ] && shift
case $seconds in '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]: SECONDS is a whole number" >&2
    exit 2
    ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! [ -x tools/cargo-fuzz/bin/cargo-fuzz ]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into tools/cargo-fuzz"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root tools/cargo-fuzz
fi
export PATH="$PWD/tools/cargo-fuzz/bin:$PATH"
# Stable rustc, nightly flags: see the top of this file.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Seeds that follow the sources they come from, so they are made, not committed.
corpus=fuzz/corpus
mkdir -p "$corpus"
for t in "${targets[@]}"; do mkdir -p "$corpus/$t"; done
if [ -d "$corpus/host_request" ]; then
    i=0
    for golden in crates/hive-c0re/tests/golden/*.txt; do
        while IFS= read -r line; do
            i=$((i + 1))
            printf '%s' "${line#> }" >"$corpus/host_request/golden-$i"
        done < <(grep '^> ' "$golden")
    done
fi
if [ -d "$corpus/sim_script" ]; then
    cp crates/hive-model-sim/src/default_script.toml "$corpus/sim_script/default_script.toml"
    # Every ```toml block of the model server's README.
    awk -v dir="$corpus/sim_script" '
        /^```toml/ { n++; out = sprintf("%s/readme-%d.toml", dir, n); printf "" > out; on = 1; next }
        /^```/ { on = 0; next }
        on { print >> out }
    ' crates/hive-model-sim/README.md
fi

say "building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

mkdir -p fuzz/logs
declare -A result
failed=0
for t in "${targets[@]}"; do
    say "fuzzing $t for ${seconds}s"
    log="fuzz/logs/$t.log"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "$log" || status=$?
    if [ "$status" -eq 0 ]; then
        result[$t]=ok
    else
        failed=1
        artifact=$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -n 1 || true)
        result[$t]="CRASH ${artifact:-(see $log)}"
    fi
done

# libFuzzer's last status line says `#RUNS ... cov: N ft: N corp: N/SIZE ... exec/s: N`.
say "summary (${seconds}s per target; logs in fuzz/logs/)"
printf '%-15s %12s %9s %7s %7s %8s  %s\n' target runs exec/s cov ft corpus result
for t in "${targets[@]}"; do
    last=$(grep -E '^#[0-9]+.*cov: ' "fuzz/logs/$t.log" | tail -n 1 || true)
    field() { sed -nE "s/.* $1: ([0-9]+).*/\\1/p" <<<"$last"; }
    runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "fuzz/logs/$t.log" | tail -n 1)
    printf '%-15s %12s %9s %7s %7s %8s  %s\n' "$t" "${runs:--}" "${rate:-$(field exec/s)}" \
        "$(field cov)" "$(field ft)" "$(field corp)" "${result[$t]}"
done
exit "$failed"
