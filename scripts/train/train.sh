#!/usr/bin/env bash
# Fine-tune GAMA / FusionAudio on N GPUs x M nodes (or one CPU process), one run or GAMA's
# staged recipe. Set the variables below (edit them, or pass them in the environment); extra
# arguments go to `python -m fusionaudio.train` and override the ones here (--max_steps 10).
#
#   scripts/train/train.sh                                    # NPROC processes here, DDP
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/train/train.sh   # node 0; NODE_RANK=1 on node 1
#   ACCELERATE_CONFIG=configs/train/fsdp.yaml scripts/train/train.sh   # FSDP (GPU boxes)
#   ACCELERATE_CONFIG=configs/train/deepspeed_zero2.yaml scripts/train/train.sh  # ZeRO-2 (pip install deepspeed)
#   STAGES="1 2 3 4 5" DATA_STAGE1=cla.json ... DATA_STAGE5=ltu.json scripts/train/train.sh   # GAMA's recipe
#
# One run (STAGES empty): the reference's fine-tuning hyper-parameters below. Staged
# (STAGES set): stage k uses configs/train/gama_stage<k>.json and DATA_STAGE<k>, writes
# OUTPUT_DIR/stage<k>, and starts from the previous stage's output (stage 1 from BASE_MODEL);
# a stage already finished (train_summary.json present) is skipped, so a rerun continues.
# Global batch = BATCH_SIZE; gradient accumulation = BATCH_SIZE / MICRO_BATCH_SIZE / (NPROC * NNODES).
# Checkpoints are written to a shared OUTPUT_DIR (every node must see the same folder).
set -euo pipefail

# -- where -----------------------------------------------------------------------------------
NPROC="${NPROC:-}"                             # processes per node (default: one per GPU, else 1)
NNODES="${NNODES:-1}"                          # machines
NODE_RANK="${NODE_RANK:-0}"                    # this machine's rank, 0 .. NNODES-1
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"        # node 0's address
MASTER_PORT="${MASTER_PORT:-29500}"
ACCELERATE_CONFIG="${ACCELERATE_CONFIG:-}"     # empty: torchrun + DDP (CPU or GPU); else `accelerate launch --config_file` (GPU configs)
# -- what ------------------------------------------------------------------------------------
BASE_MODEL="${BASE_MODEL:-pretrained/Llama-2-7b-chat-hf-qformer}"  # base directory, or a fine-tuned checkpoint
BASE_DIR="${BASE_DIR:-}"                       # base directory when BASE_MODEL is a checkpoint file without training_args.json
DATA_PATH="${DATA_PATH:-data/example/train_data_example.json}"     # JSON / JSONL records (one run)
OUTPUT_DIR="${OUTPUT_DIR:-runs/finetune}"
STAGES="${STAGES:-}"                           # e.g. "1 2 3 4 5": GAMA's stages in sequence
# -- one run's hyper-parameters (the reference's fine-tuning script) ----------------------------
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
DEVICE=()
if [ "$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')" = 0 ]; then DEVICE=(--device cpu); fi

launch() {  # launch ARGS...: fusionaudio.train on every process of this node
  if [ -n "$ACCELERATE_CONFIG" ]; then
    "$PYTHON" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" \
      --num_processes "$((NPROC * NNODES))" --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      -m fusionaudio.train "$@"
  else
    "$PYTHON" -m torch.distributed.run \
      --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
      -m fusionaudio.train "$@"
  fi
}

if [ -z "$STAGES" ]; then
  EXTRA=()
  if [ -n "$BASE_DIR" ]; then EXTRA+=(--base_dir "$BASE_DIR"); fi
  mkdir -p "$OUTPUT_DIR"
  set +e
  launch --base_model "$BASE_MODEL" --data_path "$DATA_PATH" --output_dir "$OUTPUT_DIR" \
    --batch_size "$BATCH_SIZE" --micro_batch_size "$MICRO_BATCH_SIZE" --num_epochs "$NUM_EPOCHS" \
    --learning_rate "$LEARNING_RATE" --cutoff_len 256 --val_set_size 200 --warmup_steps 9 \
    --lora_r 8 --lora_alpha 16 --lora_dropout 0.1 --lora_target_modules '[q_proj,v_proj]' \
    --train_on_inputs --save_steps 50 --eval_steps 30 --trainable_params "$TRAINABLE_PARAMS" \
    "${DEVICE[@]}" "${EXTRA[@]}" "$@" 2>&1 | tee -a "$OUTPUT_DIR/train.log"
  exit "${PIPESTATUS[0]}"
fi

START="$BASE_MODEL"
for k in $STAGES; do
  data_var="DATA_STAGE$k"
  data="${!data_var:-$DATA_PATH}"
  out="$OUTPUT_DIR/stage$k"
  mkdir -p "$out"
  if [ -f "$out/train_summary.json" ]; then
    echo "stage $k: already finished in $out, skipped"
  else
    EXTRA=()
    if [ -n "$BASE_DIR" ]; then EXTRA+=(--base_dir "$BASE_DIR"); fi
    if ls "$out"/checkpoint-* >/dev/null 2>&1; then EXTRA+=(--resume_from_checkpoint last); fi
    echo "stage $k: $data from $START -> $out"
    set +e
    launch --preset "gama_stage$k" --base_model "$START" --data_path "$data" --output_dir "$out" \
      "${DEVICE[@]}" "${EXTRA[@]}" "$@" 2>&1 | tee -a "$out/train.log"
    status="${PIPESTATUS[0]}"
    set -e
    if [ "$status" != 0 ]; then echo "stage $k failed (exit $status)" >&2; exit "$status"; fi
  fi
  START="$out"     # the next stage starts from this stage's trained tensors
  BASE_DIR=""      # ... whose base directory is recorded in its training_args.json
done
