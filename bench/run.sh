#!/usr/bin/env bash
# Builds the release binaries and runs the load harness. Arguments go to the harness:
#   bench/run.sh                              # full run: 1,16,64,256 clients, 2 s warm-up + 5 s each
#   bench/run.sh --quick                      # smoke run (1 and 64 clients, 1 s each), not written
#   bench/run.sh --duration 10 --concurrency 1,64
#   bench/run.sh --modes complete             # non-streaming only
# Needs Linux, taskset (util-linux) and at least two cores (the gateway gets core 0; the
# emulator and the load generator share core 1: see --gateway-core / --load-core).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gateway -p testkit -p bench
exec target/release/bench "$@"
