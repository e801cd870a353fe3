#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the store suite and prints the variable to export:
#
#   eval "$(scripts/test-postgres.sh)"     # start (or find running) and export the URL
#   cargo test -p store                     # runs the suite on SQLite and PostgreSQL
#   scripts/test-postgres.sh stop           # stop it and delete its data
#
# The server listens on 127.0.0.1:${PGPORT_TEST:-54329} only, trusts loopback connections (it
# holds nothing but test databases), and keeps its data under ${PGTEST_DIR:-/tmp/ai-gateway-pg-$PORT}.
# Running it again while the server is up just prints the URL. On a fresh Debian machine, as
# root, it installs the `postgresql` package when no `initdb` is found; initdb refuses to run as
# root, so the server runs as the `postgres` user.
# Only the export line goes to stdout; progress goes to stderr.
set -euo pipefail

PORT="${PGPORT_TEST:-54329}"
DIR="${PGTEST_DIR:-${TMPDIR:-/tmp}/ai-gateway-pg-$PORT}"
DATA="$DIR/data"
LOG="$DIR/server.log"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"

say() { echo "test-postgres: $*" >&2; }
die() { say "$*"; exit 1; }

# The directory holding initdb and pg_ctl: from PATH, else the newest Debian versioned directory.
find_bin() {
    local initdb
    if initdb="$(command -v initdb 2>/dev/null)"; then
        initdb="$(readlink -f "$initdb")"
        local dir="${initdb%/*}"
        if [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
    fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$newest" ] && [ -x "$newest/initdb" ] && [ -x "$newest/pg_ctl" ]; then
        echo "$newest"
        return 0
    fi
    return 1
}

install_postgres() {
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
    say "installing the postgresql package"
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
}

# Runs a command as the server's owner: `postgres` when we are root, else ourselves.
# (runuser lives in /usr/sbin, which a non-login root shell may not have on PATH.)
RUNUSER="$(command -v runuser 2>/dev/null || echo /usr/sbin/runuser)"
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        "$RUNUSER" -u postgres -- "$@"
    else
        "$@"
    fi
}

BIN="$(find_bin || true)"

if [ "${1:-start}" = "stop" ]; then
    if [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
    fi
    rm -rf "$DIR"
    say "stopped; removed $DIR"
    exit 0
fi
[ "${1:-start}" = "start" ] || die "usage: $0 [start|stop]"

if [ -z "$BIN" ]; then
    install_postgres
    BIN="$(find_bin)" || die "no initdb/pg_ctl found after installing postgresql"
fi

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || "$(command -v useradd 2>/dev/null || echo /usr/sbin/useradd)" --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "already running on 127.0.0.1:$PORT ($DATA)"
    echo "export GATEWAY_TEST_POSTGRES_URL=$URL"
    exit 0
fi

mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR"; fi
chmod 700 "$DIR"

if [ ! -f "$DATA/PG_VERSION" ]; then
    say "initdb in $DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
        { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
fi

# Durability is pointless for a throwaway server; the socket goes in our directory so the
# server does not depend on /var/run/postgresql existing.
say "starting on 127.0.0.1:$PORT"
as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='$DIR' -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2 || { tail -n 30 "$LOG" >&2 || true; die "pg_ctl start failed"; }

for _ in $(seq 1 60); do
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres; then
        say "ready"
        echo "export GATEWAY_TEST_POSTGRES_URL=$URL"
        exit 0
    fi
    sleep 0.5
done
tail -n 30 "$LOG" >&2 || true
die "server did not become ready on 127.0.0.1:$PORT"
