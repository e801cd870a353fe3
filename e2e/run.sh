#!/usr/bin/env bash
# The end-to-end suite: the official openai and anthropic SDKs against the real gateway binary.
#
#   e2e/run.sh            # venv (.venv) + requirements, build the binaries, run every test
#   e2e/run.sh -k gemini  # extra arguments go to pytest
#
# PYTHON picks the interpreter for the venv (python3); GATEWAY_BIN / EMULATOR_BIN point the suite
# at other binaries (then nothing is built).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${E2E_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r e2e/requirements.txt

if [ -z "${GATEWAY_BIN:-}${EMULATOR_BIN:-}" ]; then
    cargo build -p gateway -p testkit --bins
fi

exec "$VENV/bin/python" -m pytest e2e "$@"
