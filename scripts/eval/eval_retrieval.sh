#!/usr/bin/env bash
# Audio-text retrieval.
#   ARCH=ase  (default): the released FusionAudio-Retrieval checkpoint (WavCaps ASE) with WavCaps' protocol:
#     INPUT=audiocaps_test.json CHECKPOINT=FusionAudio-Retrieval.pt TEXT_MODEL=/path/to/bert-base-uncased \
#       AUDIO_ROOT=/path/to/audio bash scripts/eval/eval_retrieval.sh
#   ARCH=clap: a local CLAP directory, our metric convention (DCASE mAP@10):
#     ARCH=clap INPUT=clotho_test.json MODEL_DIR=/path/to/clap bash scripts/eval/eval_retrieval.sh
# INPUT: caption records {audio_id, output: [5 captions]} or a WavCaps test json (data/caption_1..5/audio).
set -euo pipefail

PYTHON=${PYTHON:-}                 # default: the project's .venv (made by `make demo`), else python3
if [ -z "$PYTHON" ]; then
  ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -x "$ROOT_DIR/.venv/bin/python" ]; then PYTHON="$ROOT_DIR/.venv/bin/python"; else PYTHON=python3; fi
fi
ARCH=${ARCH:-ase}
INPUT=${INPUT:-}
CHECKPOINT=${CHECKPOINT:-}        # ase: the released .pt (torch.load(weights_only=True); cp['model'] is used)
TEXT_MODEL=${TEXT_MODEL:-}        # ase: local bert-base-uncased directory (config.json + vocab.txt)
MODEL_DIR=${MODEL_DIR:-}          # clap: local ClapModel + ClapProcessor directory
AUDIO_ROOT=${AUDIO_ROOT:-}        # prefix for relative audio paths (default: the folder of INPUT)
OUTPUT=${OUTPUT:-}                # metrics JSON (+ .md); default: next to INPUT
DEVICE=${DEVICE:-cpu}
BATCH_SIZE=${BATCH_SIZE:-}        # ase default 128 (the original's; it changes the zero padding), clap 16
LONG_CLIPS=${LONG_CLIPS:-error}   # ase, clips > 10.23 s: error (the original crashes) | crop | windows
REF_KEY=${REF_KEY:-output}

if [[ -z "$INPUT" ]]; then echo "eval_retrieval.sh: set INPUT=<captions.json>" >&2; exit 2; fi
args=(--arch "$ARCH" --input "$INPUT" --device "$DEVICE" --ref_key "$REF_KEY")
if [[ "$ARCH" == ase ]]; then
  if [[ -z "$CHECKPOINT" || -z "$TEXT_MODEL" ]]; then
    echo "eval_retrieval.sh: ARCH=ase needs CHECKPOINT=<.pt> and TEXT_MODEL=<bert-base-uncased dir>" >&2; exit 2
  fi
  args+=(--checkpoint "$CHECKPOINT" --text_model "$TEXT_MODEL" --long_clips "$LONG_CLIPS")
else
  if [[ -z "$MODEL_DIR" ]]; then echo "eval_retrieval.sh: ARCH=clap needs MODEL_DIR=<clap dir>" >&2; exit 2; fi
  args+=(--model_dir "$MODEL_DIR")
fi
[[ -n "$BATCH_SIZE" ]] && args+=(--batch_size "$BATCH_SIZE")
[[ -n "$AUDIO_ROOT" ]] && args+=(--audio_root "$AUDIO_ROOT")
[[ -n "$OUTPUT" ]] && args+=(--output "$OUTPUT")

exec "$PYTHON" -m fusionaudio.retrieval evaluate "${args[@]}" "$@"
