#!/usr/bin/env bash
# Question answering: MODE=mcq (AIR-Bench foundation), graded (AudioBench / Clotho-AQA 0-5),
# chat (AIR-Bench chat, pairwise 1-10) or yesno. The judge is any OpenAI-compatible endpoint;
# its key is read from the env variable named by JUDGE_API_KEY_ENV (never passed on the command line).
# As published (FusionAudio's scripts): mcq with JUDGE_ALL=1 (every answer to the judge, temperature 0,
# 1 token); chat / graded with the judge prompt of the original scripts in JUDGE_PROMPT (see
# docs/evaluation.md; our default prompts are not comparable with published scores) and, for the
# two-file layout, REFERENCES=<references.json> with PRED_KEY=output. The original judge is gpt-4.1-mini.
# ANSWER_LOOKUP=audio_id (mcq): score every question against the answer of the LAST question on the same
# audio file, as the original foundation_score.py looks answers up by audio file alone (the published
# AIR-Bench foundation numbers came from that lookup); the default, question, uses each question's own answer.
# Usage: MODE=graded INPUT=preds.json JUDGE_BASE_URL=https://api.openai.com/v1 JUDGE_MODEL=gpt-4.1-mini \
#        bash scripts/eval/eval_qa.sh
set -euo pipefail

PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
MODE=${MODE:-}                    # required: mcq | graded | chat | yesno
INPUT=${INPUT:-}                  # required: inference output (records with "prediction" and "output")
OUTPUT=${OUTPUT:-}                # metrics JSON (+ .md); default: next to INPUT
JUDGE_BASE_URL=${JUDGE_BASE_URL:-}            # required for graded/chat; optional for mcq (rule matching only without it)
JUDGE_MODEL=${JUDGE_MODEL:-}
JUDGE_API_KEY_ENV=${JUDGE_API_KEY_ENV:-OPENAI_API_KEY}
JUDGE_WORKERS=${JUDGE_WORKERS:-8}
JUDGE_CACHE_DIR=${JUDGE_CACHE_DIR:-}          # default: $FUSIONAUDIO_CACHE or ~/.cache/fusionaudio
JUDGE_PROMPT=${JUDGE_PROMPT:-}    # template file with named fields (default: ours)
JUDGE_ALL=${JUDGE_ALL:-0}         # mcq: 1 = every answer to the judge, as the original
ANSWER_LOOKUP=${ANSWER_LOOKUP:-}  # mcq: question (default) | audio_id (the original foundation_score.py's lookup)
REFERENCES=${REFERENCES:-}        # graded/chat: separate references file joined on audio_id + instruction
PRED_KEY=${PRED_KEY:-prediction}
REF_KEY=${REF_KEY:-output}

if [[ -z "$MODE" || -z "$INPUT" ]]; then echo "eval_qa.sh: set MODE=<mcq|graded|chat|yesno> and INPUT=<predictions.json>" >&2; exit 2; fi

args=("$MODE" --input "$INPUT" --pred_key "$PRED_KEY" --ref_key "$REF_KEY"
      --judge_api_key_env "$JUDGE_API_KEY_ENV" --judge_workers "$JUDGE_WORKERS")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")
[[ -n "$JUDGE_BASE_URL" ]] && args+=(--judge_base_url "$JUDGE_BASE_URL")
[[ -n "$JUDGE_MODEL" ]] && args+=(--judge_model "$JUDGE_MODEL")
[[ -n "$JUDGE_CACHE_DIR" ]] && args+=(--judge_cache_dir "$JUDGE_CACHE_DIR")
[[ -n "$JUDGE_PROMPT" ]] && args+=(--judge_prompt "$JUDGE_PROMPT")
[[ "$JUDGE_ALL" == 1 ]] && args+=(--judge_all)
[[ -n "$REFERENCES" ]] && args+=(--references "$REFERENCES")
if [[ -n "$ANSWER_LOOKUP" ]]; then
  if [[ "$MODE" != mcq ]]; then echo "eval_qa.sh: ANSWER_LOOKUP applies to MODE=mcq only" >&2; exit 2; fi
  args+=(--answer_lookup "$ANSWER_LOOKUP")
fi

exec "$PYTHON" -m fusionaudio.evaluate.qa "${args[@]}" "$@"
