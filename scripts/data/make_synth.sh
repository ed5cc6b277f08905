#!/usr/bin/env bash
# Generate the synthetic sound-scene dataset (audio/*.wav, train.json, test.json, scenes.jsonl).
# Usage: scripts/data/make_synth.sh [OUT_DIR] [N_TRAIN] [N_TEST] [SEED]
#   defaults: data/synth 400 100 0 (OUT_DIR relative to the current folder);
#   PYTHON overrides the interpreter (default: the repo's .venv, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" -m fusionaudio.demo.scenes --out_dir "${1:-data/synth}" --n_train "${2:-400}" --n_test "${3:-100}" --seed "${4:-0}"
