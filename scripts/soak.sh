#!/usr/bin/env bash
# Soak (SECURITY.md, "Soak"): CONNS connections held for SOAK_SECS against one release
# gateway whose server health checks run every second
# (CHAT_GATEWAY_LIMITS__HEALTH_CHECK_INTERVAL_SECS=1); every loadgen connection also sends the
# JS SDK's client health check every PING_SECS. Expected: no unexpected disconnect (loadgen's
# dropped_during_hold = 0), every connection still live at the end, and flat memory — the
# gateway's RSS, CPU, descriptors and live connections are sampled every SAMPLE_SECS.
#
#   scripts/soak.sh                       15,000 connections for 10 minutes (~12 min in all)
#   CONNS=2000 SOAK_SECS=60 scripts/soak.sh   a short run
#
# Knobs (environment): CONNS (15000), SOAK_SECS (600), SAMPLE_SECS (30), PING_SECS (25), PROCS
# (3 loadgen processes), SOURCES (loopback source addresses, 12), PORT_BASE (24800; admin +1),
# NO_BUILD=1 to run the binaries as built. Output: target/soak/ (gateway.log, rss.tsv,
# loadgen.json, summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-15000}
SOAK_SECS=${SOAK_SECS:-600}
SAMPLE_SECS=${SAMPLE_SECS:-30}
PING_SECS=${PING_SECS:-25}
PROCS=${PROCS:-3}
SOURCES=${SOURCES:-12}
PORT_BASE=${PORT_BASE:-24800}
PUBLIC="127.0.0.1:${PORT_BASE}"
ADMIN="127.0.0.1:$((PORT_BASE + 1))"
API_KEY=soak-key
API_SECRET=soak-secret-$(date +%s)
BIN=target/release
work=target/soak

[ -n "${NO_BUILD:-}" ] || cargo build --release -p chat-gateway -p chat-gateway-bench
rm -rf "$work" && mkdir -p "$work"

CHAT_GATEWAY_PUBLIC_ADDR=$PUBLIC CHAT_GATEWAY_ADMIN_ADDR=$ADMIN \
  CHAT_GATEWAY_DATA_DIR=$work/data CHAT_GATEWAY_API_KEY=$API_KEY \
  CHAT_GATEWAY_API_SECRET=$API_SECRET CHAT_GATEWAY_LIMITS__HEALTH_CHECK_INTERVAL_SECS=1 \
  CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_IP=20000 CHAT_GATEWAY_RATE_LIMITS__ENABLED=false \
  RUST_LOG=info "$BIN/chat-gateway" >"$work/gateway.log" 2>&1 &
gateway=$!
loadgen=""
trap 'kill "$gateway" ${loadgen:+"$loadgen"} 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

live() {
  curl -s --max-time 5 "http://$ADMIN/metrics" |
    awk '/^gateway_live_connections /{print $2; f=1} END{if(!f) print "?"}'
}
rss_mib() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$gateway/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gateway/stat"; }
ticks_per_sec=$(getconf CLK_TCK)

echo "== soak: $CONNS connections for $SOAK_SECS s, server health checks every 1 s," \
  "client health checks every $PING_SECS s"
echo "gateway pid $gateway; idle RSS $(rss_mib) MiB"
"$BIN/loadgen" connect --addr "$PUBLIC" --api-key "$API_KEY" --secret "$API_SECRET" \
  --conns "$CONNS" --procs "$PROCS" --concurrency 500 --sources-first 127.0.0.2 \
  --sources-count "$SOURCES" --timeout-secs 60 --ping-secs "$PING_SECS" \
  --hold-secs "$SOAK_SECS" >"$work/loadgen.out" 2>"$work/loadgen.err" &
loadgen=$!
until grep -q '^READY' "$work/loadgen.out" 2>/dev/null; do
  kill -0 "$loadgen" 2>/dev/null || { echo "loadgen exited early" >&2; exit 1; }
  sleep 0.5
done
grep '^READY' "$work/loadgen.out"

# The hold starts now: one sample every SAMPLE_SECS, the last one just before it ends.
printf 't_s\trss_mib\tcpu_pct\tfds\tlive\n' | tee "$work/rss.tsv"
start=$SECONDS
prev=$(cpu_ticks)
t=0
while [ $t -le $((SOAK_SECS - 5)) ]; do
  now=$(cpu_ticks)
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$(rss_mib)" \
    "$(( t == 0 ? 0 : (now - prev) * 100 / ticks_per_sec / SAMPLE_SECS ))" \
    "$(ls "/proc/$gateway/fd" | wc -l)" "$(live)" | tee -a "$work/rss.tsv"
  prev=$now
  next=$((t + SAMPLE_SECS))
  [ $next -gt $((SOAK_SECS - 5)) ] && next=$((SOAK_SECS - 5))
  [ $next -le $t ] && break
  sleep $((start + next - SECONDS > 0 ? start + next - SECONDS : 0))
  t=$next
done

wait "$loadgen"
loadgen=""
tail -n 1 "$work/loadgen.out" | jq -c 'del(.upgrade_us, .tcp_us)' >"$work/loadgen.json"
jq -c --slurpfile rss <(awk 'NR>1{print $2}' "$work/rss.tsv" | jq -s .) \
  '{conns: .requested, connected, failed, failures,
    unexpected_disconnects: .dropped_during_hold, frames_during_hold, hold_secs,
    connect_secs, rss_mib: $rss[0]}' "$work/loadgen.json" | tee "$work/summary.json"
echo "gateway errors logged: $(grep -c ERROR "$work/gateway.log" || true)"
[ "$(jq .unexpected_disconnects "$work/summary.json")" = 0 ] &&
  [ "$(jq .failed "$work/summary.json")" = 0 ]
