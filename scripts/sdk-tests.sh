#!/usr/bin/env bash
# Official-SDK conformance run: builds chat-gateway, starts it on free ports with a fresh data
# dir and a random secret, then runs the JS SDK suite, the Python SDK suite (sync and async
# clients) and the browser example test against it. The gateway is stopped however this ends.
#
# Cluster mode (--cluster or SDK_CLUSTER=1) runs the same suites against two nodes sharing a
# fresh PostgreSQL database: the server SDKs talk to node A's admin listener and every client
# connects to node B's public listener, so each admin write, event and connection ending the
# suites check has to cross from one node to the other. The database is made on the server
# named by CHAT_GATEWAY_TEST_PG_URL when set, else on the local server at 127.0.0.1:5432 when
# it answers, else on a throwaway server started from the installed PostgreSQL binaries (as
# user postgres when run as root); with none of these the run fails. Both nodes are stopped,
# and the database dropped (or the throwaway server removed), however this ends.
#
# Usage: scripts/sdk-tests.sh [--cluster] [js] [python] [browser]   (default: all three)
# Environment:
#   SDK_CLUSTER=1        same as --cluster
#   SKIP_BUILD=1         use the existing target/release/chat-gateway
#   GATEWAY_BIN=path     run the suites against this gateway binary (implies no build)
#   CHROMIUM_PATH=...    browser binary (default /usr/bin/chromium; installed with apt if absent)
#   KEEP_GATEWAY_LOG=1   print the gateway log(s) even when everything passes
#   CHAT_GATEWAY_TEST_PG_URL=postgres://...   cluster mode: a superuser's URL on the server
#                        to make the database on
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JS_DIR="$ROOT/tests/sdk/js"
PY_DIR="$ROOT/tests/sdk/python"
BIN="${GATEWAY_BIN:-$ROOT/target/release/chat-gateway}"
CLUSTER=""
case "${SDK_CLUSTER:-}" in ''|0) ;; *) CLUSTER=1 ;; esac
SUITES=()
for arg in "$@"; do
  case "$arg" in
    --cluster) CLUSTER=1 ;;
    js|python|browser) SUITES+=("$arg") ;;
    *) echo "sdk-tests.sh: unknown argument: $arg (suites: js python browser; flag: --cluster)" >&2
       exit 2 ;;
  esac
done
[ ${#SUITES[@]} -eq 0 ] && SUITES=(js python browser)

log() { printf '\n==> %s\n' "$*"; }
wants() { local s; for s in "${SUITES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-gateway-sdk.XXXXXX")"
# The nodes started, by name (one, "gateway", or two, "A" and "B"), with their pids and logs.
NODES=()
declare -A NODE_PID NODE_LOG
# Cluster mode: the PostgreSQL server's administrative URL, the run's database, and the
# throwaway server's folder and binaries when one was started.
PG_ADMIN_URL=""
PG_DB=""
PG_DIR=""
PG_BIN=""

stop_node() {
  local pid=${NODE_PID[$1]:-}
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  NODE_PID[$1]=""
}

# Runs a command as the owner of the throwaway PostgreSQL server (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- env PATH="$PG_BIN:$PATH" TMPDIR=/tmp "$@"
  else
    env PATH="$PG_BIN:$PATH" "$@"
  fi
}

stop_postgres() {
  if [ -n "$PG_DB" ] && [ -n "$PG_ADMIN_URL" ]; then
    psql "$PG_ADMIN_URL" -Atqc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
      || echo "could not drop database $PG_DB on the PostgreSQL server"
    PG_DB=""
  fi
  if [ -n "$PG_DIR" ]; then
    as_pg pg_ctl -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$PG_DIR"
    PG_DIR=""
  fi
}

cleanup() {
  local status=$? name
  for name in "${NODES[@]}"; do stop_node "$name"; done
  stop_postgres
  if [ "$status" -ne 0 ] || [ -n "${KEEP_GATEWAY_LOG:-}" ]; then
    for name in "${NODES[@]}"; do
      if [ -s "${NODE_LOG[$name]}" ]; then
        if [ "$name" = gateway ]; then log "gateway log (last 80 lines)"
        else log "node $name log (last 80 lines)"; fi
        tail -n 80 "${NODE_LOG[$name]}"
      fi
    done
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

# --- PostgreSQL (cluster mode) ---------------------------------------------------------------
# The folder holding initdb and pg_ctl: on the PATH, or Debian's newest version.
pg_bin_dir() {
  local found
  if found="$(command -v initdb 2>/dev/null)"; then dirname "$found"; return 0; fi
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

# Starts a throwaway server on a free port, in a folder of its own; sets PG_ADMIN_URL.
start_throwaway_postgres() {
  PG_BIN="$(pg_bin_dir)" || true
  if [ -z "$PG_BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install postgresql"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql \
      || return 1
    PG_BIN="$(pg_bin_dir)" || true
  fi
  [ -n "$PG_BIN" ] || { echo "no initdb (on the PATH or under /usr/lib/postgresql)"; return 1; }
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  PG_DIR="$(as_pg mktemp -d /tmp/chat-gateway-sdk-pg.XXXXXX)" || { PG_DIR=""; return 1; }
  log "starting a throwaway PostgreSQL server on 127.0.0.1:$port"
  as_pg initdb --no-sync -A trust -U postgres -E UTF8 -D "$PG_DIR/data" >"$WORK/initdb.log" 2>&1 \
    || { echo "initdb failed:"; tail -n 5 "$WORK/initdb.log"; return 1; }
  as_pg pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null 2>&1 \
    || { echo "pg_ctl start failed:"; as_pg tail -n 5 "$PG_DIR/server.log"; return 1; }
  PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# Picks the server and makes the run's database on it; sets DB_URL to the database's URL.
# (Not run in a subshell: cleanup needs what it records.)
DB_URL=""
setup_postgres() {
  command -v psql >/dev/null || { echo "cluster mode needs psql (the PostgreSQL client)"; return 1; }
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if [ -n "${CHAT_GATEWAY_TEST_PG_URL:-}" ]; then
    PG_ADMIN_URL="$CHAT_GATEWAY_TEST_PG_URL"
    echo "PostgreSQL: the server of CHAT_GATEWAY_TEST_PG_URL"
  elif psql "$local_url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    PG_ADMIN_URL="$local_url"
    echo "PostgreSQL: the local server on 127.0.0.1:5432"
  else
    start_throwaway_postgres || return 1
  fi
  local name
  name="cg_sdk_$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  psql "$PG_ADMIN_URL" -Atqc "CREATE DATABASE $name" >/dev/null \
    || { echo "CREATE DATABASE $name failed on the PostgreSQL server"; return 1; }
  PG_DB="$name"
  # The same URL with the new database in place of the administrative one.
  DB_URL="$(python3 - "$PG_ADMIN_URL" "$name" <<'EOF'
import sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(url._replace(path="/" + sys.argv[2])))
EOF
)"
}

# --- start the gateway -----------------------------------------------------------------------
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
}

API_KEY="sdk-test-key"
API_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
# The server health-check interval, short so the test of server-sent health checks is quick;
# every node gets the same one.
HEALTH_CHECK_SECS=2

# start_node NAME PUBLIC_PORT ADMIN_PORT [VAR=value ...]: starts one gateway in the background.
start_node() {
  local name=$1 public_port=$2 admin_port=$3; shift 3
  NODES+=("$name")
  NODE_LOG[$name]="$WORK/$name.log"
  mkdir -p "$WORK/$name"
  env "$@" \
    CHAT_GATEWAY_PUBLIC_ADDR="127.0.0.1:$public_port" \
    CHAT_GATEWAY_ADMIN_ADDR="127.0.0.1:$admin_port" \
    CHAT_GATEWAY_DATA_DIR="$WORK/$name/data" \
    CHAT_GATEWAY_API_KEY="$API_KEY" \
    CHAT_GATEWAY_API_SECRET="$API_SECRET" \
    CHAT_GATEWAY_LIMITS__HEALTH_CHECK_INTERVAL_SECS="$HEALTH_CHECK_SECS" \
    "$BIN" serve >"${NODE_LOG[$name]}" 2>&1 &
  NODE_PID[$name]=$!
}

# wait_ready URL...: waits until every node is alive and each URL's /healthz answers 200.
wait_ready() {
  local name
  for _ in $(seq 1 300); do
    for name in "${NODES[@]}"; do
      if ! kill -0 "${NODE_PID[$name]}" 2>/dev/null; then
        echo "gateway $name exited during startup"
        return 1
      fi
    done
    if python3 - "$@" <<'EOF' 2>/dev/null
import sys, urllib.request
for base in sys.argv[1:]:
    with urllib.request.urlopen(base + "/healthz", timeout=1) as res:
        assert res.status == 200
EOF
    then return 0; fi
    sleep 0.2
  done
  echo "the gateway did not answer /healthz within 60 s"
  return 1
}

if [ -z "$CLUSTER" ]; then
  read -r PUBLIC_PORT ADMIN_PORT < <(free_ports 2)
  log "starting gateway: public 127.0.0.1:$PUBLIC_PORT, admin 127.0.0.1:$ADMIN_PORT"
  start_node gateway "$PUBLIC_PORT" "$ADMIN_PORT"
  export GATEWAY_PUBLIC_URL="http://127.0.0.1:$PUBLIC_PORT"
  export GATEWAY_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
  wait_ready "$GATEWAY_PUBLIC_URL" "$GATEWAY_ADMIN_URL" || exit 1
  echo "gateway ready (pid ${NODE_PID[gateway]})"
else
  log "cluster mode: a fresh PostgreSQL database"
  setup_postgres || { echo "cluster mode: no PostgreSQL database to run on"; exit 1; }
  echo "database $PG_DB"
  read -r A_PUBLIC A_ADMIN B_PUBLIC B_ADMIN < <(free_ports 4)
  # Both nodes start at once, as a deployment's would: they race to create the schema.
  log "starting node A (admin 127.0.0.1:$A_ADMIN) and node B (public 127.0.0.1:$B_PUBLIC)"
  PG_ENV=(CHAT_GATEWAY_STORE__KIND=postgres CHAT_GATEWAY_STORE__POSTGRES_URL="$DB_URL")
  start_node A "$A_PUBLIC" "$A_ADMIN" "${PG_ENV[@]}"
  start_node B "$B_PUBLIC" "$B_ADMIN" "${PG_ENV[@]}"
  # The server side on node A, the client side on node B.
  export GATEWAY_PUBLIC_URL="http://127.0.0.1:$B_PUBLIC"
  export GATEWAY_ADMIN_URL="http://127.0.0.1:$A_ADMIN"
  wait_ready "http://127.0.0.1:$A_PUBLIC" "http://127.0.0.1:$A_ADMIN" \
    "http://127.0.0.1:$B_PUBLIC" "http://127.0.0.1:$B_ADMIN" || exit 1
  echo "nodes ready (A pid ${NODE_PID[A]}, B pid ${NODE_PID[B]})"
fi
export GATEWAY_API_KEY="$API_KEY"
export GATEWAY_API_SECRET="$API_SECRET"
export GATEWAY_HEALTH_CHECK_INTERVAL_SECS="$HEALTH_CHECK_SECS"

# --- dependencies (cached between runs, keyed by the lockfiles) ------------------------------
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# The JS packages, shared with the cluster tests: scripts/js-deps.sh keeps them installed.
js_deps() {
  "$ROOT/scripts/js-deps.sh"
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

for name in "${NODES[@]}"; do
  if ! kill -0 "${NODE_PID[$name]}" 2>/dev/null; then
    if [ "$name" = gateway ]; then echo "the gateway died during the run"
    else echo "node $name died during the run"; fi
    ORDER+=("$name")
    RESULT[$name]=FAIL
  fi
done

log "summary"
failed=0
for name in "${ORDER[@]}"; do
  printf '  %-8s %s\n' "$name" "${RESULT[$name]}"
  [ "${RESULT[$name]}" = pass ] || failed=1
done
exit "$failed"
