#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while (default 60 s each); a crash stops with its input in
# fuzz/artifacts/<target>/. Not part of scripts/test.sh: the instrumented build alone takes
# ~10 minutes on 2 cores.
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 300 sse_chunking
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
  echo "== $t (${seconds}s)"
  # The machine's one toolchain is stable: RUSTC_BOOTSTRAP lets it take cargo-fuzz's -Z flags.
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -s none -- -max_total_time="$seconds"
done
