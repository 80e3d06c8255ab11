#!/usr/bin/env bash
# Official-SDK conformance run: builds chat-gateway, starts it on free ports with a fresh data
# dir and a random secret, then runs the JS SDK suite, the Python SDK suite (sync and async
# clients) and the browser example test against it. The gateway is stopped however this ends.
#
# Usage: scripts/sdk-tests.sh [js] [python] [browser]      (default: all three)
# Environment:
#   SKIP_BUILD=1         use the existing target/release/chat-gateway
#   GATEWAY_BIN=path     run the suites against this gateway binary (implies no build)
#   CHROMIUM_PATH=...    browser binary (default /usr/bin/chromium; installed with apt if absent)
#   KEEP_GATEWAY_LOG=1   print the gateway log even when everything passes
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JS_DIR="$ROOT/tests/sdk/js"
PY_DIR="$ROOT/tests/sdk/python"
BIN="${GATEWAY_BIN:-$ROOT/target/release/chat-gateway}"
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(js python browser)

log() { printf '\n==> %s\n' "$*"; }
wants() { local s; for s in "${SUITES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-gateway-sdk.XXXXXX")"
GATEWAY_PID=""
GATEWAY_LOG="$WORK/gateway.log"

stop_gateway() {
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$GATEWAY_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$GATEWAY_PID" 2>/dev/null
    wait "$GATEWAY_PID" 2>/dev/null
  fi
  GATEWAY_PID=""
}

cleanup() {
  local status=$?
  stop_gateway
  if [ "$status" -ne 0 ] || [ -n "${KEEP_GATEWAY_LOG:-}" ]; then
    if [ -s "$GATEWAY_LOG" ]; then
      log "gateway log (last 80 lines)"
      tail -n 80 "$GATEWAY_LOG"
    fi
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ---------------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${GATEWAY_BIN:-}" ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release) || { echo "build failed"; exit 1; }
fi
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }

# --- start the gateway -----------------------------------------------------------------------
read -r PUBLIC_PORT ADMIN_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
API_KEY="sdk-test-key"
API_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
HEALTH_CHECK_SECS=2

log "starting gateway: public 127.0.0.1:$PUBLIC_PORT, admin 127.0.0.1:$ADMIN_PORT"
CHAT_GATEWAY_PUBLIC_ADDR="127.0.0.1:$PUBLIC_PORT" \
CHAT_GATEWAY_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
CHAT_GATEWAY_DATA_DIR="$WORK/data" \
CHAT_GATEWAY_API_KEY="$API_KEY" \
CHAT_GATEWAY_API_SECRET="$API_SECRET" \
CHAT_GATEWAY_LIMITS__HEALTH_CHECK_INTERVAL_SECS="$HEALTH_CHECK_SECS" \
  "$BIN" serve >"$GATEWAY_LOG" 2>&1 &
GATEWAY_PID=$!

export GATEWAY_PUBLIC_URL="http://127.0.0.1:$PUBLIC_PORT"
export GATEWAY_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
export GATEWAY_API_KEY="$API_KEY"
export GATEWAY_API_SECRET="$API_SECRET"
export GATEWAY_HEALTH_CHECK_INTERVAL_SECS="$HEALTH_CHECK_SECS"

ready=""
for _ in $(seq 1 300); do
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    echo "gateway exited during startup"
    exit 1
  fi
  if python3 - "$GATEWAY_PUBLIC_URL" "$GATEWAY_ADMIN_URL" <<'EOF' 2>/dev/null
import sys, urllib.request
for base in sys.argv[1:]:
    with urllib.request.urlopen(base + "/healthz", timeout=1) as res:
        assert res.status == 200
EOF
  then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "gateway did not answer /healthz within 60 s"; exit 1; }
echo "gateway ready (pid $GATEWAY_PID)"

# --- dependencies (cached between runs, keyed by the lockfiles) ------------------------------
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

js_deps() {
  local stamp; stamp="$(stamp_of "$JS_DIR/package-lock.json")"
  if [ "$(cat "$JS_DIR/node_modules/.sdk-tests-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "npm ci"
    (cd "$JS_DIR" && npm ci --no-audit --no-fund) || return 1
    echo "$stamp" >"$JS_DIR/node_modules/.sdk-tests-stamp"
  fi
}

py_deps() {
  local venv="$PY_DIR/.venv" stamp
  stamp="$(stamp_of "$PY_DIR/requirements.txt")"
  if [ "$(cat "$venv/.sdk-tests-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "python venv + pip install"
    rm -rf "$venv"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$PY_DIR/requirements.txt" || return 1
    echo "$stamp" >"$venv/.sdk-tests-stamp"
  fi
}

chromium_ready() {
  local chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
  [ -x "$chromium" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install chromium"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || return 1
  fi
  [ -x "$chromium" ]
}

# --- suites ----------------------------------------------------------------------------------
declare -A RESULT
ORDER=()
run_suite() {
  local name=$1; shift
  log "suite: $name"
  ORDER+=("$name")
  if "$@"; then RESULT[$name]=pass; else RESULT[$name]=FAIL; fi
}

js_suite() {
  js_deps || return 1
  (cd "$JS_DIR" && node --test --test-concurrency=1 --test-timeout=600000 test/*.test.js)
}

python_suite() {
  py_deps || return 1
  (cd "$PY_DIR" && .venv/bin/python -m pytest -q -p no:cacheprovider)
}

browser_suite() {
  js_deps || return 1
  chromium_ready || { echo "no chromium at ${CHROMIUM_PATH:-/usr/bin/chromium}"; return 1; }
  (cd "$JS_DIR" && node --test --test-concurrency=1 --test-timeout=600000 browser/*.test.js)
}

wants js && run_suite js js_suite
wants python && run_suite python python_suite
wants browser && run_suite browser browser_suite

if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
  echo "the gateway died during the run"
  ORDER+=(gateway)
  RESULT[gateway]=FAIL
fi

log "summary"
failed=0
for name in "${ORDER[@]}"; do
  printf '  %-8s %s\n' "$name" "${RESULT[$name]}"
  [ "${RESULT[$name]}" = pass ] || failed=1
done
exit "$failed"
