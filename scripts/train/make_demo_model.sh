#!/usr/bin/env bash
# Train the bundled demo model on the synthetic sound scenes, reproducibly (seeded), on CPU,
# and write it to src/fusionaudio/assets/demo_model/ (a complete base directory, ~6 MB).
#
#   scripts/train/make_demo_model.sh            # ~10 min on 2 CPU cores
#
# Steps: synthetic data (fusionaudio.synth) -> a small random base model whose tokenizer is
# trained on the synthetic texts -> held-out scores before training -> training
# (trainable_params=full: the tiny Llama is trained from scratch too, a demo-only mode) ->
# the merged model written to OUT -> held-out scores after training -> a demo caption.
# Work files go to WORK (default runs/demo, git-ignored).
set -euo pipefail

WORK="${WORK:-runs/demo}"
OUT="${OUT:-src/fusionaudio/assets/demo_model}"
SEED="${SEED:-0}"
N_TRAIN="${N_TRAIN:-600}"        # clips (each gives 1 caption + 4 QA records)
N_TEST="${N_TEST:-100}"
NUM_EPOCHS="${NUM_EPOCHS:-8}"
LEARNING_RATE="${LEARNING_RATE:-1e-3}"
PYTHON="${PYTHON:-}"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread: bit-reproducible, and fastest on a shared box
rm -rf "$WORK"
mkdir -p "$WORK"

"$PYTHON" -m fusionaudio.synth --out_dir "$WORK/data" --n_train "$N_TRAIN" --n_test "$N_TEST" --seed "$SEED"
"$PYTHON" scripts/train/demo_helper.py make_base --data_dir "$WORK/data" --out_dir "$WORK/base" --seed "$SEED"
"$PYTHON" scripts/train/demo_helper.py evaluate --base_model "$WORK/base" --data_dir "$WORK/data" \
  --max_new_tokens 64 --output "$WORK/eval_before.json" | tee "$WORK/eval_before.txt"

"$PYTHON" -m fusionaudio.train \
  --base_model "$WORK/base" \
  --data_path "$WORK/data/train.json" \
  --output_dir "$WORK/train" \
  --batch_size 16 --micro_batch_size 16 \
  --num_epochs "$NUM_EPOCHS" --learning_rate "$LEARNING_RATE" --warmup_steps 100 \
  --val_set_size 100 --eval_steps 100 --save_steps 0 --logging_steps 50 \
  --trainable_params full --lora_dropout 0.0 --train_on_inputs False \
  --group_by_audio --cache_fbank --seed "$SEED" --device cpu

rm -rf "$OUT"
"$PYTHON" -m fusionaudio.cli convert --base_model "$WORK/base" --model_path "$WORK/train" --output "$OUT"
"$PYTHON" scripts/train/demo_helper.py evaluate --base_model "$OUT" --data_dir "$WORK/data" \
  --output "$WORK/eval_after.json" | tee "$WORK/eval_after.txt"
"$PYTHON" scripts/train/demo_helper.py model_card --out_dir "$OUT" --work "$WORK"
mkdir -p imgs
cp "$WORK/train/loss_curve.png" imgs/demo_loss_curve.png
du -sh "$OUT"
"$PYTHON" quick_inference.py --audio data/example/demo_clip.wav --question "Describe the audio." --device cpu
