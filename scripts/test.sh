#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust unit and integration tests (the PostgreSQL
# store's, and tests/cluster's several gateway processes on one database, on a local or
# throwaway server, some with the official JS SDK as their client), and the official SDK
# suites (scripts/sdk-tests.sh) when present, on one node and on a two-node PostgreSQL
# cluster. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL for the PostgreSQL store's and the cluster's tests: the local server when it
# answers; otherwise the tests start a throwaway server from the installed binaries
# (installed here if missing). The cluster tests run the chat-gateway binary that cargo test
# builds for them.
if [ -z "${CHAT_GATEWAY_TEST_PG_URL:-}" ]; then
  local_pg="postgres://postgres@127.0.0.1:5432/postgres"
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 \
     && psql "$local_pg" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    export CHAT_GATEWAY_TEST_PG_URL="$local_pg"
    echo "== PostgreSQL tests on the local server"
  else
    if ! command -v initdb >/dev/null 2>&1 \
       && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then
        echo "== installing PostgreSQL for its tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      else
        echo "PostgreSQL is not installed: install it or set CHAT_GATEWAY_TEST_PG_URL" >&2
      fi
    fi
    echo "== PostgreSQL tests on a throwaway server"
  fi
fi

# The official JS SDK (tests/sdk/js/node_modules): the cluster tests drive it as their client,
# so it is installed before cargo test (and kept while its lockfile is unchanged).
echo "== JS packages for the SDK tests"
scripts/js-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
# The SDK suites and the benchmark harness run on the debug binaries `cargo test` just
# built: they check behaviour, not speed, and a release build would cost minutes more.
if [ -x scripts/sdk-tests.sh ]; then
  echo "== official SDK suites"
  GATEWAY_BIN=target/debug/chat-gateway scripts/sdk-tests.sh
  # Again on two nodes sharing one PostgreSQL database (server SDKs on one, clients on the
  # other): all three suites, the browser one adding about 15 s.
  echo "== official SDK suites on a two-node PostgreSQL cluster"
  GATEWAY_BIN=target/debug/chat-gateway scripts/sdk-tests.sh --cluster
fi
if [ -x scripts/bench.sh ]; then
  echo "== benchmark harness (tiny, no timing assertions)"
  BENCH_BIN_DIR=target/debug scripts/bench.sh --tiny
fi
echo "== all tests passed"
