#!/usr/bin/env bash
# Sets up everything ado needs on a Debian/Ubuntu machine with Node 20: the nats-server
# package (when missing) and the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null 2>&1; then
  echo "setup: installing nats-server (Debian package)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
fi
echo "setup: $(nats-server --version)"

# chromium: the browser the dashboard's tests drive (playwright-core with its
# executablePath; no browser download). Without it those tests are skipped, saying so.
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (Debian package, for the dashboard's browser tests)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null || echo "setup: chromium not installed: the dashboard's browser tests will be skipped" >&2
fi

# openssh-server: the scaler's ssh backend is tested against a real sshd on a loopback
# port (test/e2e/scaler-ssh.test.ts skips, saying so, without it). Only for tests.
if [ ! -x /usr/sbin/sshd ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing openssh-server (for the ssh backend's tests)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server >/dev/null || echo "setup: openssh-server not installed; the ssh backend's tests will be skipped" >&2
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: ado needs Node 20 or newer, found $(node --version)" >&2
  exit 1
fi

command -v git >/dev/null 2>&1 || { echo "setup: git is required (apt-get install -y git)" >&2; exit 1; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The compiled CLI: bin/ado.mjs runs dist/ when it is up to date (fast start), else the
# TypeScript sources through tsx.
echo "setup: npm run build"
npm run build --silent
