#!/usr/bin/env bash
# Makes sure a redis-server binary exists: tests and the demo start private servers from it.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  exit 0
fi
echo "redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server;" \
     "macOS: brew install redis) and rerun." >&2
exit 1
