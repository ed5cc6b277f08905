"""``python -m fusionaudio.train``: the reference trainer's options, plus presets."""

from __future__ import annotations

import inspect
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

log = logging.getLogger("fusionaudio.train")
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


def load_preset(preset: str) -> dict:
    """A preset's options: a name in ``configs/train/`` (``gama_stage1``) or a JSON file.
    Keys starting with ``_`` are notes (where the values come from)."""
    path = Path(preset)
    if not path.is_file():
        path = PRESET_DIR / f"{preset}.json"
    if not path.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise ValueError(f"unknown training preset {preset!r}: not a file, nor one of {names}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a preset is a JSON object of train options")
    known = set(inspect.signature(train).parameters) - {"preset"}
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown train option(s) {unknown}")
    return values


def train(
    # model / data
    base_model: str = "",
    data_path: str = "",
    output_dir: str = "",
    base_dir: str | None = None,
    # training hyper-parameters (the reference's defaults)
    batch_size: int = 128,
    micro_batch_size: int = 4,
    num_epochs: float = 3,
    learning_rate: float = 3e-4,
    cutoff_len: int = 256,
    val_set_size: int = 2000,
    warmup_steps: int = 100,
    # LoRA ("none", "[]" or the reference's "['dummy']": no LoRA)
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_target_modules=("q_proj", "v_proj"),
    # LLM
    train_on_inputs: bool = True,
    add_eos_token: bool = False,
    group_by_length: bool = False,
    group_by_audio: bool = False,
    # trackers (off by default; nothing reaches the network unless asked)
    report_to: str = "none",
    wandb_project: str = "gama",
    wandb_run_name: str = "",
    wandb_watch: str = "false",
    wandb_log_model: str = "false",
    resume_from_checkpoint: str | None = None,
    prompt_template_name: str = "alpaca_short",
    save_steps: int = 100,
    eval_steps: int = 100,
    trainable_params: str = "qformer_all",
    # this project's additions
    preset: str | None = None,
    skip_bad_records: bool = False,
    check_audio: bool = True,
    seed: int = 42,
    device: str = "auto",
    max_steps: int = -1,
    gradient_checkpointing: bool = False,
    bf16="auto",
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
    padding_side: str = "left",
    logging_steps: int = 10,
    save_total_limit: int | None = None,
    cache_fbank: bool = False,
    progress: bool = True,
) -> dict:
    """Fine-tune a GAMA / FusionAudio model; returns a summary (final step, last losses, paths).

    Args:
        base_model: base model directory, or a fine-tuned checkpoint to start from (a
            .pth/.bin/.safetensors file, a checkpoint-N folder or a finished run's folder).
        data_path: JSON or JSONL records {audio_id, instruction, input, output}.
        output_dir: checkpoints, logs, loss curve and the final trained tensors.
        base_dir: the base directory when base_model is a checkpoint (default: the one
            recorded in the checkpoint's training_args.json).
        batch_size: global batch (all processes); micro_batch_size: per forward pass.
        num_epochs: passes over the data (fractions allowed); max_steps > 0 overrides it.
        cutoff_len: maximum tokens per example (prompt + answer, BOS/EOS included).
        val_set_size: records held out for the eval loss (every eval_steps steps).
        lora_target_modules: modules LoRA adapts; "none", "[]" or "['dummy']" (the
            reference's stage-1 spelling): no LoRA at all.
        train_on_inputs: False = loss on the answer only (prompt labels are -100).
        group_by_length: batch examples of similar length (less padding).
        group_by_audio: keep the questions of one clip in one micro-batch.
        report_to: none | tensorboard | wandb | all (accelerate's trackers; logs in output_dir/runs).
        resume_from_checkpoint: a checkpoint-N folder of this command (exact continuation),
            "last"/True (the newest complete one in output_dir), or a weights-only file/folder.
        trainable_params: all | proj | qformer | qformer_all (the reference's modes; LoRA is
            always trained, Llama frozen), full (everything, the LLM too: tiny models only) or
            full_frozen_encoder (full but the audio encoder: the demo recipe's pre-trained one).
        preset: a name in configs/train (gama_stage1 .. gama_stage5) or a JSON file of these
            options; its values replace the options left at their defaults.
        skip_bad_records: train on the valid records (reports go to output_dir) and drop
            examples whose audio fails to prepare, instead of stopping.
        check_audio: run the batch-time audio front end on every clip before training (so a
            bad clip stops the run before step 1, not in the middle).
        device: auto | cpu (auto: the accelerator accelerate picks, cuda:LOCAL_RANK on GPUs).
        bf16: auto (on CUDA with bf16 support) | True | False.
        save_total_limit: keep only the newest so many checkpoint-N folders.
        cache_fbank: keep every clip's fbank in memory after its first use.
        save_steps, eval_steps, logging_steps: every so many optimizer steps (0 = never).
    """
    options = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if preset:
        defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
        for key, value in load_preset(preset).items():
            if options[key] == defaults[key]:
                options[key] = value
    o = SimpleNamespace(**options)
    if not (o.base_model and o.data_path and o.output_dir):
        raise ValueError("--base_model, --data_path and --output_dir are required")
    from .loop import run_loop
    from .run import finish, open_log, prepare

    run = run_log = None
    try:
        run = prepare(o, options)
        run_log = open_log(run, o)
        step, seen, elapsed = run_loop(run, run_log)
        run_log.close()
        return finish(run, step, seen, elapsed)
    finally:
        if run_log is not None:
            run_log.close()
        if run is not None:
            run.accelerator.end_training()
        _reset_engine()


def _reset_engine() -> None:
    """Forget accelerate's process-wide state, so a later run in this process (tests, a
    notebook) sets up its own engine."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


#: Errors that are the user's input or the run's numbers: one line (or the report), no traceback.
def _user_errors() -> tuple:
    from ..audio import AudioError
    from ..data import DataValidationError
    from ..model.loading import CheckpointError
    from .checkpoints import NonFiniteError

    return AudioError, DataValidationError, CheckpointError, NonFiniteError, ValueError, FileNotFoundError


def main(argv=None) -> int:
    """``python -m fusionaudio.train --help``; exits 1 with a one-line error on bad input,
    bad records or a non-finite loss (``FUSIONAUDIO_TRACEBACK=1`` shows the traceback)."""
    import os

    import fire

    try:
        fire.Fire(train, command=argv, name="fusionaudio.train", serialize=lambda _: None)
    except _user_errors() as exc:
        if os.environ.get("FUSIONAUDIO_TRACEBACK"):
            raise
        print(f"fusionaudio.train: error: {exc}", file=sys.stderr)
        return 1
    return 0
