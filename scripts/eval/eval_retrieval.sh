#!/usr/bin/env bash
# Audio-text retrieval (t2a / a2t R@1/5/10, mAP@10) with a local CLAP directory.
# Usage: INPUT=clotho_test.json MODEL_DIR=/path/to/clap AUDIO_ROOT=/path/to/audio bash scripts/eval/eval_retrieval.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
INPUT=${INPUT:-}                  # required: caption records {audio_id, output} (several per clip allowed)
MODEL_DIR=${MODEL_DIR:-}          # required: local ClapModel + ClapProcessor directory
AUDIO_ROOT=${AUDIO_ROOT:-}        # prefix for relative audio_id paths (default: the folder of INPUT)
OUTPUT=${OUTPUT:-}                # metrics JSON (+ .md); default: next to INPUT
DEVICE=${DEVICE:-cpu}
BATCH_SIZE=${BATCH_SIZE:-16}
REF_KEY=${REF_KEY:-output}

if [[ -z "$INPUT" || -z "$MODEL_DIR" ]]; then echo "eval_retrieval.sh: set INPUT=<captions.json> and MODEL_DIR=<clap dir>" >&2; exit 2; fi

args=(--input "$INPUT" --model_dir "$MODEL_DIR" --device "$DEVICE" --batch_size "$BATCH_SIZE" --ref_key "$REF_KEY")
[[ -n "$AUDIO_ROOT" ]] && args+=(--audio_root "$AUDIO_ROOT")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")

exec "$PYTHON" -m fusionaudio.evaluate.retrieval "${args[@]}" "$@"
