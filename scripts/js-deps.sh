#!/usr/bin/env bash
# Installs the JS packages the tests run (tests/sdk/js: the official `stream-chat` SDK,
# pinned by package-lock.json) with `npm ci`, unless node_modules already holds what the
# lockfile asks for. Needed by the SDK suites (scripts/sdk-tests.sh) and by the cluster tests
# (`cargo test --test cluster`, which drive the SDK with Node.js), so scripts/test.sh runs it
# before cargo test. Idempotent: a second run with an unchanged lockfile does nothing.
# Installs Node.js and npm (the Debian packages) first when they are missing and this runs as
# root; otherwise a missing Node.js is an error.
set -euo pipefail

JS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/sdk/js" && pwd)"
STAMP="$JS_DIR/node_modules/.sdk-tests-stamp"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Node.js and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "js-deps.sh: Node.js 20 or newer and npm are needed (Debian: nodejs npm)" >&2
    exit 1
  fi
fi

stamp="$(sha256sum "$JS_DIR/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ] \
   && [ -f "$JS_DIR/node_modules/stream-chat/package.json" ]; then
  exit 0
fi
echo "== npm ci (tests/sdk/js)"
(cd "$JS_DIR" && npm ci --no-audit --no-fund)
echo "$stamp" >"$STAMP"
