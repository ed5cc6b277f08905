#!/usr/bin/env bash
# Batch inference over a JSON/JSONL file of records -> predictions for the evaluators.
# One process when NPROC=1, else torchrun with NPROC processes (one per GPU; CPU without CUDA).
# A killed run resumes where it stopped when started again with the same settings.
# Usage: JSON_INPUT=test.json JSON_OUTPUT=preds.json BASE_MODEL=/models/base MODEL_PATH=ckpt.pth \
#        NPROC=8 bash scripts/eval/infer.sh [extra python -m fusionaudio.infer options]
# DRY_RUN=1 prints the command instead of running it. Path remapping: pass --path_map OLD=NEW as an extra option.
set -euo pipefail

PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
NPROC=${NPROC:-1}                 # processes (GPUs); >1 uses torchrun
JSON_INPUT=${JSON_INPUT:-}        # required: records {audio_id, instruction, input?, output?, ...}
JSON_OUTPUT=${JSON_OUTPUT:-}      # required: predictions (.json list or .jsonl)
BASE_MODEL=${BASE_MODEL:-}        # base model directory (empty: the bundled demo model)
MODEL_PATH=${MODEL_PATH:-}        # fine-tuned checkpoint (optional)
ARCH=${ARCH:-auto}                # auto | gama | audsemthinker
BATCH_SIZE=${BATCH_SIZE:-8}
DTYPE=${DTYPE:-}                  # empty: bfloat16 on GPU, float32 on CPU
WORK_DIR=${WORK_DIR:-}            # empty: <JSON_OUTPUT>.parts/
LOADER_WORKERS=${LOADER_WORKERS:-} # audio decoding processes per model process (empty: half the cores, max 4)
RESAMPLER=${RESAMPLER:-}          # empty: sinc (the reference's); soxr | librosa
AUDIO_ROOT=${AUDIO_ROOT:-}        # folder for relative audio_ids (empty: the input file's folder)
ANSWER_FIELD=${ANSWER_FIELD:-}    # empty: prediction; `output` writes the answer where the original scripts did
# Generation; empty = the reference's defaults (sampling, temperature 0.1, top_p 0.95, top_k 300, 1024 tokens).
DO_SAMPLE=${DO_SAMPLE:-}          # true | false
NUM_BEAMS=${NUM_BEAMS:-}
TEMPERATURE=${TEMPERATURE:-}
TOP_P=${TOP_P:-}
TOP_K=${TOP_K:-}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-}
REPETITION_PENALTY=${REPETITION_PENALTY:-} # empty: none (GAMA's CompA-R inference uses 1.1)
SEED=${SEED:-}
STRUCTURED=${STRUCTURED:-0}       # 1: also store the parsed <think>/<semantic_elements>/<answer> sections
MASTER_PORT=${MASTER_PORT:-29511} # torchrun rendezvous port
DRY_RUN=${DRY_RUN:-0}

if [[ -z "$JSON_INPUT" || -z "$JSON_OUTPUT" ]]; then
  echo "infer.sh: set JSON_INPUT=<records.json> and JSON_OUTPUT=<predictions.json>" >&2; exit 2
fi

args=(--json_input "$JSON_INPUT" --json_output "$JSON_OUTPUT" --arch "$ARCH" --batch_size "$BATCH_SIZE")
for pair in base_model:BASE_MODEL model_path:MODEL_PATH dtype:DTYPE work_dir:WORK_DIR do_sample:DO_SAMPLE \
            num_beams:NUM_BEAMS temperature:TEMPERATURE top_p:TOP_P top_k:TOP_K max_new_tokens:MAX_NEW_TOKENS seed:SEED \
            loader_workers:LOADER_WORKERS resampler:RESAMPLER audio_root:AUDIO_ROOT answer_field:ANSWER_FIELD \
            repetition_penalty:REPETITION_PENALTY; do
  var=${pair#*:}
  value=${!var}
  [[ -n "$value" ]] && args+=("--${pair%%:*}" "$value")
done
[[ "$STRUCTURED" == 1 ]] && args+=(--structured)

if (( NPROC > 1 )); then
  cmd=("$PYTHON" -m torch.distributed.run --nnodes 1 --nproc_per_node "$NPROC" --master_port "$MASTER_PORT"
       -m fusionaudio.infer "${args[@]}" "$@")
else
  cmd=("$PYTHON" -m fusionaudio.infer "${args[@]}" "$@")
fi
if [[ "$DRY_RUN" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
