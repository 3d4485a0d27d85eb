#!/usr/bin/env bash
# Installs what is needed and starts a demo hive: hive-c0re (nspawn where this
# machine can, else plain processes), the scripted model server (offline), and
# two agents, alice and bob. With ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN
# (what `claude setup-token` prints) in the environment, the agents use the real
# API: the credential goes to the hive as a secret (`hive-c0re secret set`),
# never copied into the agents' state.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
bin="$PWD/target/debug"
export HIVE_CLAUDE_BIN="$PWD/tools/claude/node_modules/.bin/claude"
export HIVE_STATE_DIR="${HIVE_STATE_DIR:-$PWD/.local/demo/state}"
export HIVE_RUN_DIR="${HIVE_RUN_DIR:-$PWD/.local/demo/run}"
mkdir -p "$HIVE_STATE_DIR" "$HIVE_RUN_DIR" "$PWD/.local/demo"
logs="$PWD/.local/demo"

credentials=()
for var in ANTHROPIC_API_KEY CLAUDE_CODE_OAUTH_TOKEN; do
    [ -n "${!var:-}" ] && credentials+=("$var")
done
if [ ${#credentials[@]} -gt 0 ]; then
    say "claude credentials found (${credentials[*]}): agents use the real Anthropic API"
else
    if [ -f "$HOME/.claude/.credentials.json" ]; then
        # A copied login goes stale as soon as one copy refreshes its token.
        say "a claude login is in ~/.claude, but the hive does not copy it: for the real API run"
        say "  claude setup-token, then export CLAUDE_CODE_OAUTH_TOKEN=... and run this again"
    fi
    say "no claude credentials: starting the scripted model server (offline demo)"
    "$bin/hive-model-sim" --listen 127.0.0.1:0 --port-file "$logs/model-sim.addr" >"$logs/model-sim.log" 2>&1 &
    for _ in $(seq 100); do [ -s "$logs/model-sim.addr" ] && break; sleep 0.1; done
    export ANTHROPIC_BASE_URL="http://$(cat "$logs/model-sim.addr")"
    export ANTHROPIC_API_KEY="sk-offline-demo"
    credentials=(ANTHROPIC_API_KEY)
fi

if [ "$(id -u)" = 0 ] && [ -w /sys/kernel/mm/ksm/run ] && [ "$(cat /sys/kernel/mm/ksm/run)" = 0 ]; then
    # Each agent's pasta (its network) holds ~25 MiB of mostly zero buffers;
    # hive-c0re opts only those pastas in to the kernel's same-page merging.
    say "turning on the kernel's same-page merging (ksmd) so idle agents stay cheap"
    echo 1 >/sys/kernel/mm/ksm/use_zero_pages
    echo 1 >/sys/kernel/mm/ksm/run
fi

say "starting hive-c0re (log: $logs/hive-c0re.log)"
# The demo's settings are its own, not those of a server's /etc/hyperhive/hive.toml.
# The credentials reach the agents as secrets, not through the daemon's environment.
HIVE_CONFIG=/dev/null env -u ANTHROPIC_API_KEY -u CLAUDE_CODE_OAUTH_TOKEN \
    "$bin/hive-c0re" serve >"$logs/hive-c0re.log" 2>&1 &
for _ in $(seq 100); do "$bin/hive-c0re" status >/dev/null 2>&1 && break; sleep 0.1; done
for var in "${credentials[@]}"; do
    # On stdin, never the command line; every agent's claude has it from its next turn.
    printf %s "${!var}" | "$bin/hive-c0re" secret set "$var"
done
for a in alice bob; do
    "$bin/hive-c0re" status --json | grep -q "\"name\":\"$a\"" || "$bin/hive-c0re" spawn "$a"
done
"$bin/hive-c0re" status

# A one-time login link for the dashboard (hive-c0re urls hands them to host.sock's users only).
dashboard=$("$bin/hive-c0re" urls | sed -n 's/^log in: *\([^ ]*\).*/\1/p')

cat <<EOT

The hive is up. Try:
  export HIVE_STATE_DIR=$HIVE_STATE_DIR HIVE_RUN_DIR=$HIVE_RUN_DIR
  $bin/hive-c0re send alice ping          # alice answers you
  $bin/hive-c0re send alice "ask bob what is 6 x 7?"   # alice asks bob, bob answers her, she tells you
  $bin/hive-c0re recv --wait 60           # read your inbox
  $bin/hive-c0re status                   # who is doing what
  $bin/hive-c0re events alice             # alice's turns, as the dashboard's terminal shows them
  $bin/hive-c0re events bob --follow      # watch bob's turns as they happen
Dashboard (this link logs in one browser, once, within 10 minutes; \`hive-c0re urls\` prints another): ${dashboard}
Stop it: kill \$(pgrep -f 'hive-c0re serve') \$(pgrep -f hive-model-sim)
EOT
