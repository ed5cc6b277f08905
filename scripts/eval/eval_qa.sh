#!/usr/bin/env bash
# Question answering: MODE=mcq (AIR-Bench foundation), graded (AudioBench / Clotho-AQA 0-5),
# chat (AIR-Bench chat, pairwise 1-10) or yesno. The judge is any OpenAI-compatible endpoint;
# its key is read from the env variable named by JUDGE_API_KEY_ENV (never passed on the command line).
# Usage: MODE=graded INPUT=preds.json JUDGE_BASE_URL=https://api.openai.com/v1 JUDGE_MODEL=gpt-4.1-mini \
#        bash scripts/eval/eval_qa.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
MODE=${MODE:-}                    # required: mcq | graded | chat | yesno
INPUT=${INPUT:-}                  # required: inference output (records with "prediction" and "output")
OUTPUT=${OUTPUT:-}                # metrics JSON (+ .md); default: next to INPUT
JUDGE_BASE_URL=${JUDGE_BASE_URL:-}            # required for graded/chat; optional for mcq (rule matching only without it)
JUDGE_MODEL=${JUDGE_MODEL:-}
JUDGE_API_KEY_ENV=${JUDGE_API_KEY_ENV:-OPENAI_API_KEY}
JUDGE_WORKERS=${JUDGE_WORKERS:-8}
JUDGE_CACHE_DIR=${JUDGE_CACHE_DIR:-}          # default: $FUSIONAUDIO_CACHE or ~/.cache/fusionaudio
PRED_KEY=${PRED_KEY:-prediction}
REF_KEY=${REF_KEY:-output}

if [[ -z "$MODE" || -z "$INPUT" ]]; then echo "eval_qa.sh: set MODE=<mcq|graded|chat|yesno> and INPUT=<predictions.json>" >&2; exit 2; fi

args=("$MODE" --input "$INPUT" --pred_key "$PRED_KEY" --ref_key "$REF_KEY"
      --judge_api_key_env "$JUDGE_API_KEY_ENV" --judge_workers "$JUDGE_WORKERS")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")
[[ -n "$JUDGE_BASE_URL" ]] && args+=(--judge_base_url "$JUDGE_BASE_URL")
[[ -n "$JUDGE_MODEL" ]] && args+=(--judge_model "$JUDGE_MODEL")
[[ -n "$JUDGE_CACHE_DIR" ]] && args+=(--judge_cache_dir "$JUDGE_CACHE_DIR")

exec "$PYTHON" -m fusionaudio.evaluate.qa "${args[@]}" "$@"
