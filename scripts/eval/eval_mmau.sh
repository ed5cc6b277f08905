#!/usr/bin/env bash
# MMAU test-mini as AudSemThinker evaluates it (training/evaluate/mmau_mini_omni.py): the multiple-choice
# prompt with "Choices:", beam search (5 beams, no sampling, 400 new tokens), then the token-overlap
# string_match scorer with accuracy by task, difficulty and sub-category.
# Usage: MMAU_JSON=data/mmau/mmau-test-mini.json WORK=results/mmau BASE_MODEL=/models/audsemthinker \
#        bash scripts/eval/eval_mmau.sh
# SECTIONS=two for the GRPO model (<think>/<answer>); SECTIONS=three (default) for think/semantic/answer.
# Beam search runs through `python -m fusionaudio.infer --arch audsemthinker --num_beams N`; NUM_BEAMS=1
# runs greedy. Extra arguments go to fusionaudio.infer.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
MMAU_JSON=${MMAU_JSON:-}          # required: the MMAU JSON (items with audio_id, question, choices, answer, ...)
WORK=${WORK:-}                    # output folder (default: next to MMAU_JSON)
AUDIO_ROOT=${AUDIO_ROOT:-}        # default: the folder of MMAU_JSON, as upstream
SECTIONS=${SECTIONS:-three}       # three | two
STYLE=${STYLE:-omni}              # omni (AudSemThinker prefix) | plain (question + choices only)
NUM_BEAMS=${NUM_BEAMS:-5}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-400}

if [[ -z "$MMAU_JSON" ]]; then echo "eval_mmau.sh: set MMAU_JSON=<mmau-test-mini.json>" >&2; exit 2; fi
WORK=${WORK:-$(dirname "$MMAU_JSON")/mmau_eval}
mkdir -p "$WORK"

prep=(prepare --mmau_json "$MMAU_JSON" --out "$WORK/records.json" --sections "$SECTIONS" --style "$STYLE")
[[ -n "$AUDIO_ROOT" ]] && prep+=(--audio_root "$AUDIO_ROOT")
"$PYTHON" -m fusionaudio.evaluate.mmau "${prep[@]}"

JSON_INPUT="$WORK/records.json" JSON_OUTPUT="$WORK/predictions.json" ARCH=audsemthinker DO_SAMPLE=false \
  NUM_BEAMS="$NUM_BEAMS" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" PYTHON="$PYTHON" \
  bash "$HERE/infer.sh" --prompt_mode raw "$@"

exec "$PYTHON" -m fusionaudio.evaluate.mmau score --input "$WORK/predictions.json" --output "$WORK/mmau.json" \
  --structured "$SECTIONS"
