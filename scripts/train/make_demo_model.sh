#!/usr/bin/env bash
# Train the bundled demo model on the synthetic sound scenes, reproducibly (seeded), on CPU,
# and write it to src/fusionaudio/assets/demo_model/ (a complete base directory, 5.4 MB).
#
#   scripts/train/make_demo_model.sh            # about 52 min with 2 CPU threads (measured: data + encoder
#                                               # 8 min; training 2.3 steps/s, 43 min, when nothing else runs)
#
# Steps: synthetic data (fusionaudio.demo.scenes) -> a small base model whose tokenizer is trained on
# the synthetic texts and whose audio encoder is pre-trained on the clips' per-column labels
# (fusionaudio.demo.pretrain: the stand-in for GAMA's pre-trained CAV-MAE; the rest is random)
# -> held-out scores before training -> training with the encoder frozen (one stage; STAGE2_STEPS adds one)
# (trainable_params=full_frozen_encoder: the tiny Llama is trained from scratch too, a demo-only
# mode; docs/demo_model.md says why) -> the merged model written to OUT -> held-out scores after
# training -> the bundled clip's caption, scored.
# Work files go to WORK (default runs/demo, git-ignored).
set -euo pipefail

WORK="${WORK:-runs/demo}"
OUT="${OUT:-src/fusionaudio/assets/demo_model}"
SEED="${SEED:-0}"
N_TRAIN="${N_TRAIN:-8000}"       # clips (each gives 1 caption + up to N_QA QA records)
N_TEST="${N_TEST:-100}"
N_QA="${N_QA:-6}"
ENCODER_STEPS="${ENCODER_STEPS:-800}"  # encoder pre-training steps (32 clips each)
# the column labels it learns ("sweep": steady/rising/falling, so that tone and chirp are told apart)
ENCODER_LABELS="${ENCODER_LABELS:-kind,pitch,loudness,variant,length,onset,clicks,sweep}"
MAX_STEPS="${MAX_STEPS:-6000}"      # training steps (56 records = 8 clips each)
LEARNING_RATE="${LEARNING_RATE:-1.5e-3}"
STAGE2_STEPS="${STAGE2_STEPS:-0}"  # > 0: a second stage from the first one's weights
STAGE2_LR="${STAGE2_LR:-5e-4}"
LLM_LAYERS="${LLM_LAYERS:-4}"
SAVE_STEPS="${SAVE_STEPS:-0}"    # checkpoints to look at on the way (they do not change the result)
THREADS="${THREADS:-2}"          # the bits depend on the thread count (the bundled model: 2)
PYTHON="${PYTHON:-}"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
rm -rf "$WORK"
mkdir -p "$WORK"

"$PYTHON" -m fusionaudio.demo.scenes --out_dir "$WORK/data" --n_train "$N_TRAIN" --n_test "$N_TEST" --seed "$SEED" --n_qa "$N_QA"
"$PYTHON" scripts/train/demo_helper.py make_base --data_dir "$WORK/data" --out_dir "$WORK/base" --seed "$SEED" \
  --llm_layers "$LLM_LAYERS" --encoder_steps "$ENCODER_STEPS" --encoder_labels "$ENCODER_LABELS" --report "$WORK/encoder_pretraining.json"
"$PYTHON" scripts/train/demo_helper.py evaluate --base_model "$WORK/base" --data_dir "$WORK/data" \
  --max_new_tokens 64 --output "$WORK/eval_before.json" | tee "$WORK/eval_before.txt"

COMMON=(--data_path "$WORK/data/train.json" --batch_size 56 --micro_batch_size 56
  --val_set_size 200 --eval_steps 250 --save_steps "$SAVE_STEPS" --logging_steps 25
  --trainable_params full_frozen_encoder --lora_dropout 0.0 --train_on_inputs False
  --group_by_audio --cache_fbank --device cpu)
# stage 1: everything but the pre-trained encoder, from random weights
"$PYTHON" -m fusionaudio.train --base_model "$WORK/base" --output_dir "$WORK/train" "${COMMON[@]}" \
  --max_steps "$MAX_STEPS" --learning_rate "$LEARNING_RATE" --warmup_steps 100 --seed "$SEED"
FINAL="$WORK/train"
if [ "$STAGE2_STEPS" -gt 0 ]; then  # stage 2: the same from stage 1's weights, lower lr, new order
  "$PYTHON" -m fusionaudio.train --base_model "$WORK/train" --base_dir "$WORK/base" --output_dir "$WORK/train2" \
    "${COMMON[@]}" --max_steps "$STAGE2_STEPS" --learning_rate "$STAGE2_LR" --warmup_steps 20 --seed $((SEED + 1))
  FINAL="$WORK/train2"
fi

rm -rf "$OUT"
"$PYTHON" -m fusionaudio.cli convert --base_model "$WORK/base" --model_path "$FINAL" --output "$OUT"
"$PYTHON" scripts/train/demo_helper.py evaluate --base_model "$OUT" --data_dir "$WORK/data" \
  --output "$WORK/eval_after.json" | tee "$WORK/eval_after.txt"
"$PYTHON" scripts/train/demo_helper.py model_card --out_dir "$OUT" --work "$WORK" --train_dir "$FINAL"
mkdir -p imgs
cp "$WORK/train/loss_curve.png" imgs/demo_loss_curve.png  # stage 1's curve
du -sh "$OUT"
# the bundled clip as `make demo` captions it (seed 0) and greedily, each scored against its scene
"$PYTHON" scripts/train/demo_helper.py clip --base_model "$OUT" --seeds 0 | tee "$WORK/clip.json"
