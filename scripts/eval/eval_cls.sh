#!/usr/bin/env bash
# Classification as published: inference at the original's settings, then embedding-similarity scoring.
#
# The original (FusionAudio scripts/eval/eval_cls.sh) first runs batch inference with sampling at
# temperature 0.01 (top_p 0.95, top_k 300, 1024 new tokens), then scores with eval_Cls.py. This script
# does both steps with those settings; with PREDICTIONS set (and JSON_INPUT empty) it only scores.
#
# Usage (end to end):
#   JSON_INPUT=ESC50_test.json WORK=results/esc50 BASE_MODEL=/models/base MODEL_PATH=ckpt.pth \
#   VOCAB=ESC50 EMBEDDER=text-embedding-3-large bash scripts/eval/eval_cls.sh
# Scoring only:
#   PREDICTIONS=preds.json VOCAB=ESC50 bash scripts/eval/eval_cls.sh
# VOCAB: a packaged vocabulary (ESC50, FSD50K, FSDnoisy18k, TAU_Urban, UrbanSound8K) or a CSV path.
# PRED_FORMAT: caption (default, as the original's published caption task: the whole answer is embedded),
# labels (every answer split as the original's cla task) or auto (only answers starting "Label:"/"Labels:").
# EMBEDDER: minilm (offline default; "not comparable with published numbers"), text-embedding-3-large
# (OpenAI API, key in $EMBED_API_KEY_ENV) or bert-large-uncased (EMBED_MODEL=<local dir>).
# Extra arguments go to the scorer (python -m fusionaudio.evaluate.classification).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
JSON_INPUT=${JSON_INPUT:-}        # eval records; set to run inference first
WORK=${WORK:-}                    # output folder for the end-to-end run (default: next to JSON_INPUT)
PREDICTIONS=${PREDICTIONS:-}      # inference output to score (default: $WORK/t-0.01.json)
OUTPUT=${OUTPUT:-}                # metrics JSON; default: next to PREDICTIONS
VOCAB=${VOCAB:-}                  # packaged name or CSV "index,name"; empty: the labels found in the data
EMBEDDER=${EMBEDDER:-minilm}      # minilm | text-embedding-3-large | bert-large-uncased
EMBED_MODEL=${EMBED_MODEL:-}      # local model directory (minilm: default packaged; bert: required)
EMBED_BASE_URL=${EMBED_BASE_URL:-}            # text-embedding-3-large: default https://api.openai.com/v1
EMBED_API_KEY_ENV=${EMBED_API_KEY_ENV:-OPENAI_API_KEY}
AGGREGATION=${AGGREGATION:-accu}  # accu (the original's) | max
PRED_FORMAT=${PRED_FORMAT:-caption}  # caption (the original: the whole answer) | labels | auto ("Label(s):" split)
PRED_KEY=${PRED_KEY:-prediction}
REF_KEY=${REF_KEY:-output}
# the original's inference settings
TEMPERATURE=${TEMPERATURE:-0.01}
TOP_P=${TOP_P:-0.95}
TOP_K=${TOP_K:-300}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-1024}

if [[ -n "$JSON_INPUT" ]]; then
  WORK=${WORK:-$(dirname "$JSON_INPUT")/cls_$(basename "${JSON_INPUT%.*}")}
  mkdir -p "$WORK"
  PREDICTIONS=${PREDICTIONS:-$WORK/t-${TEMPERATURE}.json}
  echo "eval_cls.sh: inference at the original's settings (sampling, temperature $TEMPERATURE, top_p $TOP_P, top_k $TOP_K)" >&2
  JSON_INPUT="$JSON_INPUT" JSON_OUTPUT="$PREDICTIONS" DO_SAMPLE=true TEMPERATURE="$TEMPERATURE" TOP_P="$TOP_P" \
    TOP_K="$TOP_K" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" PYTHON="$PYTHON" bash "$HERE/infer.sh"
fi
if [[ -z "$PREDICTIONS" ]]; then echo "eval_cls.sh: set JSON_INPUT=<records.json> (end to end) or PREDICTIONS=<predictions.json>" >&2; exit 2; fi

args=(--input "$PREDICTIONS" --embedder "$EMBEDDER" --aggregation "$AGGREGATION" --pred_format "$PRED_FORMAT"
      --pred_key "$PRED_KEY" --ref_key "$REF_KEY" --embed_api_key_env "$EMBED_API_KEY_ENV")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")
[[ -n "$VOCAB" ]] && args+=(--vocabulary "$VOCAB")
[[ -n "$EMBED_MODEL" ]] && args+=(--embed_model "$EMBED_MODEL")
[[ -n "$EMBED_BASE_URL" ]] && args+=(--embed_base_url "$EMBED_BASE_URL")

echo "eval_cls.sh: scoring $PREDICTIONS (embedder $EMBEDDER, aggregation $AGGREGATION)" >&2
exec "$PYTHON" -m fusionaudio.evaluate.classification "${args[@]}" "$@"
