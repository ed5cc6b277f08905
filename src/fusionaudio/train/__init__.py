"""Fine-tune GAMA / FusionAudio: the reference trainer's options, on Hugging Face ``accelerate``.

    python -m fusionaudio.train --base_model BASE_DIR --data_path train.json --output_dir out \\
        --batch_size 128 --micro_batch_size 4 --num_epochs 3 --learning_rate 3e-4

    torchrun --nproc_per_node 8 -m fusionaudio.train ...            # DDP
    accelerate launch --config_file configs/train/fsdp.yaml -m fusionaudio.train ...
    scripts/train/train.sh                                          # N GPUs, M nodes, GAMA's stages

The stages of a run, one module each:

1. data (:mod:`.batches`): validated records, tokenised examples, the audio front end
   checked up front, fbanks per micro-batch;
2. model setup (:mod:`.model_setup`): base directory or previous checkpoint, LoRA or
   none, the trained parameters;
3. the loop (:mod:`.loop`): the engine, gradient accumulation, clipping, evaluation,
   non-finite stops;
4. checkpoints (:mod:`.checkpoints`): trained tensors only plus the engine state,
   written atomically, exact resume.

:mod:`.run` ties them together; :mod:`.cli` holds the options (``train``) and the presets
(``configs/train/gama_stage1..5.json``). Options keep the reference's names, defaults and
meanings (``gama_finetune.py``): global ``batch_size``; gradient accumulation
``batch_size // micro_batch_size // world_size``; AdamW (weight decay 0, gradient clipping
at 1.0), linear warm-up then linear decay; ``val_set_size`` records held out; a checkpoint
every ``save_steps``. Differences, on purpose: see ``docs/training.md``.
"""

from fusionaudio.train.checkpoints import NonFiniteError, save_trained
from fusionaudio.train.cli import load_preset, main, train
from fusionaudio.train.model_setup import (TRAINABLE_RULES, build_model, enable_checkpointing, lora_settings, parameter_counts,
                          resolve_start, set_trainable, trainable_names)

__all__ = ["NonFiniteError", "TRAINABLE_RULES", "build_model", "enable_checkpointing", "load_preset",
           "lora_settings", "main", "parameter_counts", "resolve_start", "save_trained", "set_trainable", "train",
           "trainable_names"]
