#!/usr/bin/env bash
# Benchmarks: idle memory per connection, connect rate, admin writes, event latency, idle CPU,
# each against the gateway and against the minimal baselines in bench/; user queries on stores
# of 10k and 100k users, against another gateway build when given; the PostgreSQL store's
# admin writes against its raw statements (pgbase).
#
#   scripts/bench.sh                         all scenarios, 3 runs each (~40 min on 2 cores)
#   scripts/bench.sh --scenarios memory,cpu  a subset (memory, connect, admin, events, cpu, query,
#                                            pgadmin)
#   scripts/bench.sh --scenarios query --runs 1 --before-bin <other chat-gateway> --before-label main
#                                            queries, this tree (after) against another build
#   scripts/bench.sh --runs 5                more runs per configuration
#   scripts/bench.sh --store postgres        the gateway on PostgreSQL beside the gateway on sled
#                                            (memory, connect) and against pgbase (pgadmin); a
#                                            fresh database per run on --pg-url URL (default:
#                                            $CHAT_GATEWAY_TEST_PG_URL, else the local server)
#   scripts/bench.sh --tiny                  CI harness check: tiny sizes, one run, output in
#                                            target/bench-tiny/, exits non-zero on any failure;
#                                            needs PostgreSQL as --store postgres does
#   scripts/bench.sh --servers baseline      without the gateway (skips the events scenario)
#   scripts/bench.sh --report-only           rebuild BENCHMARKS.md from bench/results/*.json
#   BENCH_BIN_DIR=target/debug scripts/bench.sh --tiny
#                                            no build: the binaries already in that folder (the
#                                            test command's harness check, on its debug builds)
#
# Writes bench/results/<scenario>.json (PostgreSQL figures under bench/results/postgres/),
# bench/results/rss-vs-connections.svg and BENCHMARKS.md.
# Every other option: target/release/benchrun --help.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(-p chat-gateway-bench)
case " $* " in
  *" --report-only "* | *" --servers baseline "* | *" --servers=baseline "*) ;;
  *) packages+=(-p chat-gateway) ;;
esac
dir="${BENCH_BIN_DIR:-}"
if [ -z "$dir" ]; then
  cargo build --release "${packages[@]}"
  dir=target/release
fi

exec "$dir/benchrun" --bin-dir "$dir" "$@"
