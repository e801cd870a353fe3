#!/usr/bin/env bash
# Starts a throwaway Redis server for the limits suite and prints the variable to export:
#
#   eval "$(scripts/test-redis.sh)"     # start (or find running) and export the URL
#   cargo test -p limits                 # runs the Redis half of the suite too
#   scripts/test-redis.sh stop           # stop it and delete its directory
#
# The server listens on 127.0.0.1:${REDIS_PORT_TEST:-63799} only, keeps nothing on disk (no RDB
# snapshots, no AOF), and keeps its pid file and log under ${REDISTEST_DIR:-/tmp/ai-gateway-redis-$PORT}.
# Running it again while the server is up just prints the URL. On a fresh Debian machine, as
# root, it installs the `redis-server` package when no `redis-server` is found.
# Only the export line goes to stdout; progress goes to stderr.
set -euo pipefail

PORT="${REDIS_PORT_TEST:-63799}"
DIR="${REDISTEST_DIR:-${TMPDIR:-/tmp}/ai-gateway-redis-$PORT}"
PIDFILE="$DIR/redis.pid"
LOG="$DIR/server.log"
URL="redis://127.0.0.1:$PORT"

say() { echo "test-redis: $*" >&2; }
die() { say "$*"; exit 1; }

install_redis() {
    [ "$(id -u)" -eq 0 ] || die "redis-server is not installed and installing it needs root (apt-get install redis-server)"
    command -v apt-get >/dev/null || die "redis-server is not installed and apt-get is not available"
    say "installing the redis-server package"
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

ping() {
    # redis-cli comes with the server package (redis-tools); bash's /dev/tcp is the fallback.
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]
    else
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" 2>/dev/null || return 1
        printf 'PING\r\n' >&3
        local reply
        read -r -t 2 reply <&3 || true
        exec 3>&-
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

if [ "${1:-start}" = "stop" ]; then
    if running; then
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$DIR"
    say "stopped; removed $DIR"
    exit 0
fi
[ "${1:-start}" = "start" ] || die "usage: $0 [start|stop]"

if running && ping; then
    say "already running on 127.0.0.1:$PORT ($DIR)"
    echo "export GATEWAY_TEST_REDIS_URL=$URL"
    exit 0
fi

command -v redis-server >/dev/null || install_redis
command -v redis-server >/dev/null || die "no redis-server found after installing redis-server"

mkdir -p "$DIR"
chmod 700 "$DIR"
say "starting on 127.0.0.1:$PORT"
redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
    --save "" --appendonly no --dir "$DIR" \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" \
    --maxclients 1000 >&2 || { tail -n 30 "$LOG" >&2 || true; die "redis-server failed to start"; }

for _ in $(seq 1 60); do
    if ping; then
        say "ready"
        echo "export GATEWAY_TEST_REDIS_URL=$URL"
        exit 0
    fi
    sleep 0.25
done
tail -n 30 "$LOG" >&2 || true
die "server did not become ready on 127.0.0.1:$PORT"
