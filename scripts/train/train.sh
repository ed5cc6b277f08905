#!/usr/bin/env bash
# Fine-tune GAMA / FusionAudio with torchrun: one process on CPU, N GPUs, or several nodes.
# Set the variables below (edit them, or pass them in the environment); extra arguments go
# to `python -m fusionaudio.train` and override the ones here (e.g. --max_steps 10).
#
#   scripts/train/train.sh                                   # NPROC processes on this machine
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/train/train.sh    # node 0; NODE_RANK=1 on node 1
#   BASE_MODEL=runs/stage1/checkpoint-500 scripts/train/train.sh        # start from a checkpoint
#
# Global batch = BATCH_SIZE; gradient accumulation = BATCH_SIZE / MICRO_BATCH_SIZE / (NPROC * NNODES).
# The hyper-parameters are those of the reference's fine-tuning script.
set -euo pipefail

BASE_MODEL="${BASE_MODEL:-pretrained/Llama-2-7b-chat-hf-qformer}"  # base directory, or a fine-tuned checkpoint
BASE_DIR="${BASE_DIR:-}"                       # base directory when BASE_MODEL is a checkpoint file without training_args.json
DATA_PATH="${DATA_PATH:-data/example/train_data_example.json}"     # JSON / JSONL records
OUTPUT_DIR="${OUTPUT_DIR:-runs/finetune}"
NPROC="${NPROC:-}"                             # processes on this node (default: one per GPU, else 1)
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
BATCH_SIZE="${BATCH_SIZE:-256}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-4}"
NUM_EPOCHS="${NUM_EPOCHS:-2}"
LEARNING_RATE="${LEARNING_RATE:-1e-4}"
TRAINABLE_PARAMS="${TRAINABLE_PARAMS:-qformer_all}"
PYTHON="${PYTHON:-}"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ -z "$NPROC" ]; then
  NPROC="$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))')"
fi
EXTRA=()
if [ -n "$BASE_DIR" ]; then EXTRA+=(--base_dir "$BASE_DIR"); fi
mkdir -p "$OUTPUT_DIR"

"$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m fusionaudio.train \
  --base_model "$BASE_MODEL" \
  --data_path "$DATA_PATH" \
  --output_dir "$OUTPUT_DIR" \
  --batch_size "$BATCH_SIZE" \
  --micro_batch_size "$MICRO_BATCH_SIZE" \
  --num_epochs "$NUM_EPOCHS" \
  --learning_rate "$LEARNING_RATE" \
  --cutoff_len 256 \
  --val_set_size 200 \
  --warmup_steps 9 \
  --lora_r 8 \
  --lora_alpha 16 \
  --lora_dropout 0.1 \
  --lora_target_modules '[q_proj,v_proj]' \
  --train_on_inputs \
  --save_steps 50 \
  --eval_steps 30 \
  --trainable_params "$TRAINABLE_PARAMS" \
  "${EXTRA[@]}" "$@" 2>&1 | tee -a "$OUTPUT_DIR/train.log"
