#!/usr/bin/env bash
# Installs what hyperhive needs on a Debian machine: Debian packages, the
# claude CLI (project-local, locked), the dashboard's npm packages; then
# builds the workspace. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v systemd-nspawn >/dev/null || need_apt+=(systemd-container)
# pasta gives each agent container its own network (see ARCHITECTURE.md, runtime).
command -v pasta >/dev/null || need_apt+=(passt)
# nft keeps the containers' connections off the host's own networks (runtime/nspawn/egress.rs).
[ -x /usr/sbin/nft ] || need_apt+=(nftables)
# The boundary tests' attacker programs and probes.
[ -x /usr/bin/python3 ] || need_apt+=(python3)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v cc >/dev/null || need_apt+=(build-essential)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v cargo >/dev/null || need_apt+=(cargo)
# The PostgreSQL backend's tests and benchmarks start a throwaway cluster of
# their own from the server binaries (/usr/lib/postgresql/<version>/bin);
# openssl makes that cluster's TLS certificates.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
command -v openssl >/dev/null || need_apt+=(openssl)
# The test command checks the systemd unit and the Nix files.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v nix-instantiate >/dev/null || need_apt+=(nix-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${need_apt[*]}; run this as root or: sudo apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    say "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

say "installing the claude CLI (tools/claude, locked)"
(cd tools/claude && npm ci --no-audit --no-fund --loglevel=error)

if [ -f web/package.json ]; then
    say "building the dashboard front end (web/)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
fi

say "building hyperhive (cargo build --workspace)"
cargo build --workspace --bins --quiet
