#!/usr/bin/env bash
# Classification by embedding similarity (accuracy / mAP, per-class report, confusion matrix).
# Usage: INPUT=preds.json VOCAB=data/eval/vocabulary/ESC50.csv OUTPUT=results/esc50.cls.json bash scripts/eval/eval_cls.sh
# Every variable can be set from the environment; extra arguments go to the evaluator.
set -euo pipefail

PYTHON=${PYTHON:-python}
INPUT=${INPUT:-}                  # required: inference output (records with "prediction" and "output")
OUTPUT=${OUTPUT:-}                # metrics JSON (a .md and a confusion PNG go next to it); default: next to INPUT
VOCAB=${VOCAB:-}                  # CSV "index,name"; empty: the labels found in the data
BACKEND=${BACKEND:-st}            # st | bert | openai
EMBED_MODEL=${EMBED_MODEL:-}      # st/bert: local model directory (st default: packaged all-MiniLM-L6-v2); openai: model name
EMBED_BASE_URL=${EMBED_BASE_URL:-}            # openai backend only
EMBED_API_KEY_ENV=${EMBED_API_KEY_ENV:-OPENAI_API_KEY}   # name of the env variable holding the key
PRED_KEY=${PRED_KEY:-prediction}
REF_KEY=${REF_KEY:-output}

if [[ -z "$INPUT" ]]; then echo "eval_cls.sh: set INPUT=<predictions.json>" >&2; exit 2; fi

args=(--input "$INPUT" --backend "$BACKEND" --pred_key "$PRED_KEY" --ref_key "$REF_KEY" --embed_api_key_env "$EMBED_API_KEY_ENV")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")
[[ -n "$VOCAB" ]] && args+=(--vocabulary "$VOCAB")
[[ -n "$EMBED_MODEL" ]] && args+=(--embed_model "$EMBED_MODEL")
[[ -n "$EMBED_BASE_URL" ]] && args+=(--embed_base_url "$EMBED_BASE_URL")

exec "$PYTHON" -m fusionaudio.evaluate.classification "${args[@]}" "$@"
