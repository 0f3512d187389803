#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests on 127.0.0.1 only and print its URL;
# `postgres.sh stop` stops it; `postgres.sh restart [DOWN_S]` stops it and starts it again
# DOWN_S seconds later. Needs root (the server runs as the postgres user) and Debian's
# postgresql package.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] || { echo "postgresql server binaries not found" >&2; exit 1; }
DIR=${MNIST_SEARCH_PG_DIR:-/tmp/mnist-search-pg}
PORT=${MNIST_SEARCH_PG_PORT:-55432}
OPTS="-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=100"
if [ "${1:-}" = stop ]; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null
  exit 0
fi
if [ "${1:-}" = restart ]; then  # as a failover or an upgrade does: clients are cut off
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
  sleep "${2:-0}"  # seconds the server stays down
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
    -o "$OPTS" start >/dev/null
  exit 0
fi
if [ -f "$DIR/data/postmaster.pid" ]; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
fi
rm -rf "$DIR"
mkdir -p "$DIR"
chown postgres "$DIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "$OPTS" start >/dev/null
runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres mnist_search
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/mnist_search"
