#!/usr/bin/env bash
# Full-size overload runs against the release gateway (SECURITY.md, "Overload"):
#
#   scripts/overload.sh burst   25,000 connects at once from several loadgen processes against
#                               one gateway process that may hold 20,000 descriptors: counts
#                               accepted and refused, samples the gateway's CPU, descriptors,
#                               RSS and a fresh admin /healthz every second while saturated,
#                               then frees the sockets and checks that it accepts again.
#   scripts/overload.sh storm   ~15,000 clients connected; the gateway is stopped (1001 closes)
#                               and started again on the same data; every client reconnects at
#                               once (loadgen --reconnect); reports the time to reconnect all.
#   scripts/overload.sh all     both (the default).
#
# Sizes and knobs (environment): BURST_CONNS (25000), STORM_CONNS (15000), PROCS (4),
# CONCURRENCY (handshakes in flight per loadgen process, 1000), SOURCES (loopback source
# addresses, 16), MAX_CONNECTIONS (the gateway's limits.max_connections, 19500),
# PORT_BASE (public port; admin is +1; 24700), NO_BUILD=1 to run the binaries as built.
# Output: target/overload/<scenario>/.
set -euo pipefail
cd "$(dirname "$0")/.."

BURST_CONNS=${BURST_CONNS:-25000}
STORM_CONNS=${STORM_CONNS:-15000}
PROCS=${PROCS:-4}
CONCURRENCY=${CONCURRENCY:-1000}
SOURCES=${SOURCES:-16}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-19500}
PORT_BASE=${PORT_BASE:-24700}
PUBLIC="127.0.0.1:${PORT_BASE}"
ADMIN="127.0.0.1:$((PORT_BASE + 1))"
API_KEY=overload-key
API_SECRET=overload-secret-$(date +%s)
BIN=target/release

[ -n "${NO_BUILD:-}" ] || cargo build --release -p chat-gateway -p chat-gateway-bench

gateway_pid=""

# start_gateway <data dir> <log>: the gateway with the descriptor cap of this machine (and
# without Stream's per-endpoint budgets: a storm of 15k connects would meet the 10,000 a minute).
start_gateway() {
  CHAT_GATEWAY_PUBLIC_ADDR=$PUBLIC CHAT_GATEWAY_ADMIN_ADDR=$ADMIN \
    CHAT_GATEWAY_DATA_DIR=$1 CHAT_GATEWAY_API_KEY=$API_KEY CHAT_GATEWAY_API_SECRET=$API_SECRET \
    CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS=$MAX_CONNECTIONS RUST_LOG=info \
    CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_IP=$MAX_CONNECTIONS CHAT_GATEWAY_RATE_LIMITS__ENABLED=false \
    "$BIN/chat-gateway" >>"$2" 2>&1 3>&- &
  gateway_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the gateway did not start; see $2" >&2
  exit 1
}

stop_gateway() {
  [ -n "$gateway_pid" ] || return 0
  kill -TERM "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
}

cleanup() {
  stop_gateway
  [ -n "${loadgen_pid:-}" ] && kill "$loadgen_pid" 2>/dev/null || true
}
trap cleanup EXIT

ticks_per_sec=$(getconf CLK_TCK)

# cpu_ticks <pid>: utime + stime.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# live_connections: the gateway's own gauge.
live_connections() {
  curl -s --max-time 2 "http://$ADMIN/metrics" 2>/dev/null |
    awk '/^gateway_live_connections /{print $2; f=1} END{if(!f) print "?"}'
}

# sample <pid> <seconds> <file>: one line per second — elapsed, CPU % of one core over the
# second, open descriptors, RSS MiB, live connections, and a fresh-connection admin /healthz
# (HTTP code and seconds; 000 = no answer within 2 s).
sample() {
  local pid=$1 secs=$2 out=$3 prev now health
  printf 't_s\tcpu_pct\tfds\trss_mib\tlive\thealthz\thealthz_s\n' >"$out"
  prev=$(cpu_ticks "$pid")
  for t in $(seq 1 "$secs"); do
    sleep 1
    now=$(cpu_ticks "$pid")
    health=$(curl -s -o /dev/null -w '%{http_code}\t%{time_total}' --max-time 2 \
      -H 'Connection: close' "http://$ADMIN/healthz" || true)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" \
      "$(( (now - prev) * 100 / ticks_per_sec ))" \
      "$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)" \
      "$(awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$pid/status" 2>/dev/null)" \
      "$(live_connections)" "${health:-000	-}" | tee -a "$out"
    prev=$now
  done
}

# loadgen_connect <conns> <user prefix> <extra args...>: runs in the background, holding until
# its stdin (a fifo, written through fd 3) closes; sets loadgen_pid. Every other background
# job closes fd 3, or the fifo would never see its end.
loadgen_connect() {
  local conns=$1 prefix=$2
  shift 2
  local fifo="$work/loadgen-$prefix.in"
  rm -f "$fifo"
  mkfifo "$fifo"
  "$BIN/loadgen" connect --addr "$PUBLIC" --api-key "$API_KEY" --secret "$API_SECRET" \
    --conns "$conns" --user-prefix "$prefix" --procs "$PROCS" --concurrency "$CONCURRENCY" \
    --sources-first 127.0.0.2 --sources-count "$SOURCES" --timeout-secs 30 --wait-stdin \
    "$@" <"$fifo" >"$work/loadgen-$prefix.out" 2>"$work/loadgen-$prefix.err" &
  loadgen_pid=$!
  exec 3>"$fifo"
}

# loadgen_wait_ready <prefix>: blocks until the loadgen printed its READY line.
loadgen_wait_ready() {
  until grep -q '^READY' "$work/loadgen-$1.out" 2>/dev/null; do
    kill -0 "$loadgen_pid" 2>/dev/null || { echo "loadgen exited early" >&2; exit 1; }
    sleep 0.5
  done
  grep '^READY' "$work/loadgen-$1.out"
}

# loadgen_finish <prefix> <report file>: closes its stdin, waits, writes and prints the
# report without raw samples. (Not in a pipeline: `wait` needs this shell.)
loadgen_finish() {
  exec 3>&-
  wait "$loadgen_pid" || true
  loadgen_pid=""
  tail -n 1 "$work/loadgen-$1.out" |
    jq -c '{requested, connected, failed, failures, first_error, connect_secs,
      connect_rate_per_s, p50_ms: .upgrade_latency.p50_ms, p99_ms: .upgrade_latency.p99_ms,
      dropped_during_hold, reconnects, reconnect_failures}' >"$2"
  cat "$2"
}

burst() {
  work=target/overload/burst
  rm -rf "$work" && mkdir -p "$work"
  echo "== burst: $BURST_CONNS connects at once, $PROCS loadgen processes, max_connections $MAX_CONNECTIONS"
  start_gateway "$work/data" "$work/gateway.log"
  echo "gateway pid $gateway_pid, descriptor limit $(awk '/Max open files/{print $4}' /proc/$gateway_pid/limits)"
  local started=$SECONDS
  loadgen_connect "$BURST_CONNS" b
  sample "$gateway_pid" 45 "$work/saturated.tsv" 3>&- &
  local sampler=$!
  loadgen_wait_ready b
  echo "connect phase over after $((SECONDS - started)) s"
  wait "$sampler"
  echo "-- the gateway's counters (refusals by code; overload = close 1013 before the first frame)"
  curl -s "http://$ADMIN/metrics" | grep -E '^gateway_(connects|accept)' | tee "$work/counters.txt"
  echo "-- accept errors logged while saturated: $(grep -c 'accept failed' "$work/gateway.log" || true)"
  echo "-- budget waits logged: $(grep -c 'descriptor budget' "$work/gateway.log" || true)"
  echo "-- loadgen report"
  loadgen_finish b "$work/report.json"
  echo "-- recovery: sockets released, connecting 1000 more"
  sleep 2
  loadgen_connect 1000 r
  loadgen_wait_ready r
  loadgen_finish r "$work/recovery.json"
  stop_gateway
}

storm() {
  work=target/overload/storm
  rm -rf "$work" && mkdir -p "$work"
  echo "== storm: $STORM_CONNS clients, gateway restart, everyone reconnects"
  start_gateway "$work/data" "$work/gateway.log"
  loadgen_connect "$STORM_CONNS" s --reconnect
  loadgen_wait_ready s
  local held
  held=$(grep '^READY' "$work/loadgen-s.out" | sed 's/^READY //' | jq .connected)
  echo "-- stopping the gateway (SIGTERM)"
  local stop_started=$SECONDS
  stop_gateway
  echo "stopped in $((SECONDS - stop_started)) s; starting it again"
  start_gateway "$work/data" "$work/gateway.log"
  local t0
  t0=$(date +%s.%N)
  sample "$gateway_pid" 30 "$work/reconnect.tsv" 3>&- &
  local sampler=$!
  local live=0
  for _ in $(seq 600); do
    live=$(live_connections)
    [ "$live" = "?" ] && live=0
    [ "${live%.*}" -ge "$held" ] && break
    sleep 0.1
  done
  echo "-- $live of $held live again $(echo "$(date +%s.%N) - $t0" | bc) s after the restart"
  wait "$sampler"
  loadgen_finish s "$work/report.json"
  stop_gateway
}

case "${1:-all}" in
  burst) burst ;;
  storm) storm ;;
  all) burst; storm ;;
  *) echo "usage: $0 [burst|storm|all]" >&2; exit 2 ;;
esac
