#!/usr/bin/env bash
# Soaks a hive: 20 agents (nspawn as root, else processes) on the scripted
# model for MINUTES (default 30), with operator sends, agent-to-agent
# questions, schedules, pause/resume, and kill -9 of hive-c0re, of harnesses
# and of claude processes at random. Then it checks that every message came
# back (none lost; twice only after a crash), no agent failed, no process
# outlived its agent, and hive-c0re's memory, the database and the harness
# logs stayed within bounds. Not part of scripts/test.sh.
#
#   scripts/soak.sh [MINUTES]          e.g. sudo scripts/soak.sh 30
#
# Knobs (environment): SOAK_AGENTS (20), SOAK_RUNTIME (nspawn|process),
# SOAK_TICK_MS (3000: the pause between two random actions), SOAK_SEED (to
# replay a run's choices; each run prints its seed), SOAK_DRAIN_MINUTES (15).
# The test itself is crates/hive-c0re/tests/soak.rs; its figures are printed
# as it goes and at the end, and kept in test-output/soak-DATE.log.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-30}
case $minutes in '' | *[!0-9]* | 0)
    echo "usage: scripts/soak.sh [MINUTES]: MINUTES is a whole number above 0" >&2
    exit 2
    ;;
esac

./scripts/deps.sh
export HIVE_CLAUDE_BIN="$PWD/tools/claude/node_modules/.bin/claude"
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1
export SOAK_MINUTES=$minutes
mkdir -p test-output
log=test-output/soak-$(date -u +%Y%m%dT%H%M%SZ).log
printf '\033[1m==> soak for %s minutes (log: %s)\033[0m\n' "$minutes" "$log"
cargo build --workspace --quiet
cargo test -p hive-c0re --test soak --quiet -- --ignored --nocapture --test-threads 1 2>&1 | tee "$log"
