#!/usr/bin/env bash
# Captioning metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (+ SPICE/SPIDEr when the Stanford models exist).
# PROTOCOL=ltu: as LTU reports it (answer prefix "...:" stripped, punctuation removed, 5 trials with one
# answer per reference caption, mean/std of CIDEr and SPICE); METRICS and GROUP_KEY do not apply there.
# Usage: INPUT=preds.json OUTPUT=results/audiocaps.cap.json bash scripts/eval/eval_caption.sh
set -euo pipefail

PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
INPUT=${INPUT:-}                  # required: inference output (records with "prediction" and "output")
OUTPUT=${OUTPUT:-}                # metrics JSON (+ .md); default: next to INPUT
METRICS=${METRICS:-bleu,meteor,rouge,cider,spice}
TOKENIZER=${TOKENIZER:-ptb}       # ptb (needs Java, the COCO toolkit's) | simple
GROUP_KEY=${GROUP_KEY:-audio_id}  # records sharing this key are one clip with several references
PROTOCOL=${PROTOCOL:-coco}        # coco | ltu
TRIALS=${TRIALS:-5}               # ltu: trials (one answer per reference caption)
PRED_KEY=${PRED_KEY:-prediction}
REF_KEY=${REF_KEY:-output}

if [[ -z "$INPUT" ]]; then echo "eval_caption.sh: set INPUT=<predictions.json>" >&2; exit 2; fi

args=(--input "$INPUT" --tokenizer "$TOKENIZER" --pred_key "$PRED_KEY" --ref_key "$REF_KEY" --protocol "$PROTOCOL")
if [[ "$PROTOCOL" == ltu ]]; then args+=(--trials "$TRIALS"); else args+=(--metrics "$METRICS" --group_key "$GROUP_KEY"); fi
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")

exec "$PYTHON" -m fusionaudio.evaluate.captioning "${args[@]}" "$@"
