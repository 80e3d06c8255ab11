#!/usr/bin/env bash
# Starts several chat-gateway nodes on this machine, all on one PostgreSQL database, prints
# their addresses, and stops everything on Ctrl-C (nodes first, then a throwaway database).
#
#   scripts/cluster.sh                          # 3 nodes on a throwaway PostgreSQL server
#   scripts/cluster.sh -n 2 postgres://user:pw@host:5432/chat
#   CHAT_GATEWAY_STORE__POSTGRES_URL=postgres://... scripts/cluster.sh
#
# Options:
#   -n, --nodes N      how many nodes (default 3)
#   --base-port P      node i listens on P+2i (public) and P+2i+1 (admin); default: free
#                      ports chosen by the system, read back from each node's log
#   --debug            use the debug build instead of the release build
#   --keep             keep the run folder (logs, throwaway database) after stopping
#
# The database must be one of the cluster's own (the gateway creates its tables there). With
# no URL, a throwaway server is made with initdb in a temporary folder (as user postgres when
# run as root) and removed on exit. CHAT_GATEWAY_API_KEY and CHAT_GATEWAY_API_SECRET are
# used when set, otherwise a key and secret are generated for this run; either way they are
# written to cluster.env in the run folder (mode 0600) so tokens can be minted with
# `. <run folder>/cluster.env && chat-gateway token --server`. Any other CHAT_GATEWAY_*
# setting in the environment reaches every node. CHAT_GATEWAY_BIN names a binary to use
# instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=3
base_port=0
profile=release
keep=0
url="${CHAT_GATEWAY_STORE__POSTGRES_URL:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--nodes) nodes="$2"; shift 2 ;;
    --base-port) base_port="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --release) profile=release; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    postgres://*|postgresql://*) url="$1"; shift ;;
    *) echo "cluster.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$nodes" in ''|*[!0-9]*|0) echo "cluster.sh: --nodes needs a positive number" >&2; exit 2 ;; esac
case "$base_port" in ''|*[!0-9]*) echo "cluster.sh: --base-port needs a number" >&2; exit 2 ;; esac

# The binary: given, or built (cargo does nothing when it is up to date).
if [ -n "${CHAT_GATEWAY_BIN:-}" ]; then
  bin="$CHAT_GATEWAY_BIN"
else
  target="${CARGO_TARGET_DIR:-target}"
  if [ "$profile" = release ]; then
    echo "== cargo build --release (the gateway binary)"
    cargo build --release --bin chat-gateway
  else
    echo "== cargo build (the gateway binary, debug)"
    cargo build --bin chat-gateway
  fi
  bin="$target/$profile/chat-gateway"
fi
[ -x "$bin" ] || { echo "cluster.sh: no executable at $bin" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

as_root=0
[ "$(id -u)" = 0 ] && as_root=1
# Runs a command as the owner of the throwaway server (initdb refuses root).
as_pg() {
  if [ "$as_root" = 1 ]; then runuser -u postgres -- env PATH="$pg_bin:$PATH" "$@"
  else env PATH="$pg_bin:$PATH" "$@"; fi
}

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/chat-gateway-cluster.XXXXXX")"
pids=()
pg_data=""
stopping=0
cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  # Finish the cleanup whatever happens to the terminal or a pipe reading this.
  set +e
  trap '' INT TERM PIPE
  if [ "${#pids[@]}" -gt 0 ]; then
    echo
    echo "== stopping the nodes"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
      # Shutdown closes sockets and waits at most limits.shutdown_grace_secs; then SIGKILL.
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  fi
  if [ -n "$pg_data" ]; then
    echo "== stopping the throwaway PostgreSQL server"
    as_pg pg_ctl -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true
    [ "$keep" = 1 ] || rm -rf "$pg_dir"
  fi
  if [ "$keep" = 1 ]; then echo "== kept $run_dir"; else rm -rf "$run_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port nothing listens on (good enough on one machine; retried on failure).
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

if [ -z "$url" ]; then
  pg_bin="$(dirname "$(command -v initdb 2>/dev/null || true)")"
  if [ "$pg_bin" = . ] || [ ! -x "$pg_bin/initdb" ]; then
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  fi
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "cluster.sh: give a PostgreSQL URL, or install PostgreSQL (initdb) for a throwaway server" >&2
    exit 1
  fi
  if [ "$as_root" = 1 ]; then
    pg_dir="$(runuser -u postgres -- mktemp -d /tmp/chat-gateway-cluster-pg.XXXXXX)"
  else
    pg_dir="$run_dir/pg"; mkdir "$pg_dir"
  fi
  pg_data="$pg_dir/data"
  echo "== throwaway PostgreSQL server in $pg_dir"
  as_pg initdb --no-sync -A trust -U postgres -E UTF8 -D "$pg_data" >"$run_dir/initdb.log" 2>&1 \
    || { cat "$run_dir/initdb.log" >&2; exit 1; }
  started=0
  for _ in 1 2 3 4 5; do
    pg_port="$(free_port)"
    if as_pg pg_ctl -D "$pg_data" -l "$pg_dir/server.log" -w -t 60 \
         -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300" \
         start >/dev/null 2>&1; then
      started=1; break
    fi
  done
  [ "$started" = 1 ] || { tail -n 20 "$pg_dir/server.log" >&2; exit 1; }
  as_pg psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'CREATE DATABASE chat' >/dev/null
  url="postgres://postgres@127.0.0.1:$pg_port/chat"
fi

api_key="${CHAT_GATEWAY_API_KEY:-}"
api_secret="${CHAT_GATEWAY_API_SECRET:-}"
if [ -z "$api_key" ] || [ -z "$api_secret" ]; then
  random() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1" || true; }
  api_key="$(random 16)"
  api_secret="$(random 48)"
fi
(
  umask 077
  printf 'export CHAT_GATEWAY_API_KEY=%q\nexport CHAT_GATEWAY_API_SECRET=%q\n' "$api_key" "$api_secret"
  printf 'export CHAT_GATEWAY_STORE__KIND=postgres\nexport CHAT_GATEWAY_STORE__POSTGRES_URL=%q\n' "$url"
) >"$run_dir/cluster.env"

# Addresses are read back from the line each node logs once both listeners are bound.
log_filter="info"
[ -n "${RUST_LOG:-}" ] && log_filter="$RUST_LOG,chat_gateway::app=info"

# Node i's process, detached from the terminal so that Ctrl-C reaches this script, which then
# stops the nodes before the database. `exec` keeps the pid the one this script waits on.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
node() {
  local i="$1" public admin
  if [ "$base_port" = 0 ]; then
    public="127.0.0.1:0"; admin="127.0.0.1:0"
  else
    public="127.0.0.1:$((base_port + 2 * i))"; admin="127.0.0.1:$((base_port + 2 * i + 1))"
  fi
  exec env CHAT_GATEWAY_STORE__KIND=postgres \
    CHAT_GATEWAY_STORE__POSTGRES_URL="$url" \
    CHAT_GATEWAY_API_KEY="$api_key" \
    CHAT_GATEWAY_API_SECRET="$api_secret" \
    CHAT_GATEWAY_PUBLIC_ADDR="$public" \
    CHAT_GATEWAY_ADMIN_ADDR="$admin" \
    CHAT_GATEWAY_DATA_DIR="$run_dir/node-$i" \
    RUST_LOG="$log_filter" \
    ${detach[@]+"${detach[@]}"} "$bin" serve </dev/null >"$run_dir/node-$i.log" 2>&1
}
for i in $(seq 0 $((nodes - 1))); do
  node "$i" &
  pids+=("$!")
done

# Each node's addresses, once it serves.
declare -a publics admins
for i in $(seq 0 $((nodes - 1))); do
  line=""
  for _ in $(seq 1 600); do
    line="$(grep -m 1 'chat-gateway serving' "$run_dir/node-$i.log" 2>/dev/null || true)"
    [ -n "$line" ] && break
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then break; fi
    sleep 0.05
  done
  if [ -z "$line" ]; then
    echo "cluster.sh: node $i did not start:" >&2
    tail -n 20 "$run_dir/node-$i.log" >&2
    exit 1
  fi
  publics[$i]="$(sed -n 's/.*public=\([^ ]*\).*/\1/p' <<<"$line")"
  admins[$i]="$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' <<<"$line")"
  if command -v curl >/dev/null 2>&1; then
    for _ in $(seq 1 200); do
      curl -fsS -o /dev/null "http://${admins[$i]}/healthz" 2>/dev/null && break
      sleep 0.05
    done
  fi
done

shown_url="$(sed 's#://\([^:/@]*\):[^@]*@#://\1:<redacted>@#' <<<"$url")"
echo
echo "chat-gateway: $nodes nodes on $shown_url"
echo "API key: $api_key   (key, secret and URL: $run_dir/cluster.env)"
echo
for i in $(seq 0 $((nodes - 1))); do
  printf 'node %d  pid %-7s  clients ws://%s/connect  admin http://%s  log %s\n' \
    "$i" "${pids[$i]}" "${publics[$i]}" "${admins[$i]}" "$run_dir/node-$i.log"
done
echo
echo "Mint tokens: . $run_dir/cluster.env && $bin token --server"
echo "Ctrl-C stops every node$( [ -n "$pg_data" ] && echo ' and the throwaway database')."

# Report nodes that exit (killed on purpose or not); keep serving with the others.
declare -A reported
while :; do
  for i in "${!pids[@]}"; do
    if [ -z "${reported[$i]:-}" ] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
      status=0; wait "${pids[$i]}" 2>/dev/null || status=$?
      echo "node $i (pid ${pids[$i]}) exited with status $status; see $run_dir/node-$i.log"
      reported[$i]=1
    fi
  done
  sleep 1 &
  wait $! || true
done
