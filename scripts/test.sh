#!/usr/bin/env bash
# Runs every test of hyperhive: formatting, lints, unit and end-to-end tests
# (real claude CLI against the scripted model server, both runtimes where
# this machine allows), and the dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
export HIVE_CLAUDE_BIN="$PWD/tools/claude/node_modules/.bin/claude"
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "fuzz targets compile (fuzz/; scripts/fuzz.sh runs them)"
# Checked without libFuzzer (no C++ build, no nightly flags), sharing target/.
# Not --locked: a dependency added to a crate lands in fuzz/Cargo.lock here.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --no-default-features \
    --quiet -- -D warnings
say "cargo test"
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    echo "note: PostgreSQL is not installed: the store's PostgreSQL cases pass as skipped (scripts/deps.sh installs it)"
fi
cargo test --workspace --quiet
if [ -d web/tests ]; then
    say "dashboard browser tests"
    (cd web && node --test tests/)
fi
say "all tests passed"
