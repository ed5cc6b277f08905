"""LoRA GRPO of the Qwen2.5-Omni thinker: AudSemThinker's second stage, on TRL's ``GRPOTrainer``.

Every rollout and every log-prob pass gets the clip's audio (:mod:`fusionaudio.audsem.grpo_trainer`);
records are checked up front (:mod:`fusionaudio.audsem.grpo_data`); the rewards are upstream's
(:mod:`fusionaudio.audsem.rewards`): ``accuracy`` and ``strict_format`` (0.5), plus ``length`` first with
``--use_length_constraint``, summed with weight 1 each.

    python -m fusionaudio.audsem.grpo --base_model_path DIR --data_path qa.jsonl --output_dir runs/grpo \\
        [--model_path runs/sft] [--num_generations 4 --beta 0.01 --semantic_elements --use_length_constraint]

``--model_path`` continues training an SFT adapter (``fusionaudio.audsem.train`` output); the reference
policy is then that adapter, frozen. Without it a fresh LoRA (r=8, alpha=16, dropout 0.05 on q_proj/v_proj)
is trained and the reference is the base model. ``--batch_size`` and ``--num_generations`` count
completions (TRL's convention); when one optimizer step holds fewer completions than a prompt group, a group
is generated once and spread over several optimizer steps (TRL's ``steps_per_generation``).

``output_dir`` receives the adapter (``adapter_model.safetensors`` + ``adapter_config.json``, loadable by
quick_inference, ``fusionaudio.infer``, the server and ``fusionaudio export --merge``), ``train_config.json``
and ``train_log.jsonl`` (TRL's logged metrics: loss, reward, ``rewards/<name>/mean``, kl, ...), and a
``checkpoint-N`` every ``--save_steps`` optimizer steps (the adapter plus the optimizer, scheduler and RNG
states and ``trainer_state.json``, read back with ``torch.load(weights_only=True)``).
``--resume_from_checkpoint last`` (or a path) continues a run exactly when its options are unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import torch

from fusionaudio.audsem.config import GRPO_DEFAULTS as D
from fusionaudio.audsem.config import LORA_DEFAULTS, SYSTEM_PROMPT
from fusionaudio.errors import RunError, UsageError

logger = logging.getLogger(__name__)

__all__ = ["grpo", "reward_functions", "generation_schedule", "main"]

CONFIG_NAME = "train_config.json"
LOG_NAME = "train_log.jsonl"
#: Options a resumed run may change; any other difference from the saved ``train_config.json`` is refused.
RESUMABLE = ("output_dir", "resume_from_checkpoint", "max_steps", "save_steps", "logging_steps", "device",
             "skip_bad_records")


def reward_functions(semantic_elements: bool = False, use_length_constraint: bool = False, target_length: int = 100,
                     length_penalty_alpha: float = 0.1, length_penalty_delta: float = 0.5,
                     encourage_target_length: bool = False) -> list:
    """Upstream's reward list: ``[length,] accuracy, strict_format`` (TRL logs them by these names)."""
    from fusionaudio.audsem import rewards

    funcs = [rewards.accuracy, functools.partial(rewards.strict_format, sections=3 if semantic_elements else 2)]
    if use_length_constraint:
        funcs.insert(0, functools.partial(rewards.length, target_length=target_length, alpha=length_penalty_alpha,
                                          delta=length_penalty_delta, encourage_target_length=encourage_target_length))
    return funcs


def generation_schedule(batch_size: int, grad_accum: int, num_generations: int, processes: int = 1) -> dict:
    """How completions are generated and consumed: ``steps_per_generation`` (TRL micro-steps per generation
    batch), ``optimizer_steps`` per generation batch and ``prompts`` per generation batch (all processes).
    The generation batch is the smallest that holds whole prompt groups and whole optimizer steps."""
    for name, value in (("batch_size", batch_size), ("grad_accum", grad_accum), ("processes", processes)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if num_generations < 2:
        raise UsageError(f"num_generations must be >= 2 (GRPO compares completions of a prompt), got {num_generations}")
    per_step = batch_size * processes * grad_accum
    generation_batch = per_step * num_generations // math.gcd(per_step, num_generations)
    return {"steps_per_generation": generation_batch // (batch_size * processes),
            "optimizer_steps": generation_batch // per_step, "prompts": generation_batch // num_generations}


def _build_policy(base_model_path, model_path, torch_dtype, device, lora: dict):
    """(model, peft_config): a fresh LoRA config for the trainer, or the SFT adapter made trainable."""
    from peft import LoraConfig

    from fusionaudio.audsem.adapter import apply_adapter
    from fusionaudio.audsem.loading import load_thinker

    model = load_thinker(base_model_path, dtype=torch_dtype, device=device)
    if model_path is None:
        targets = lora["target_modules"]
        targets = [t.strip() for t in targets.split(",") if t.strip()] if isinstance(targets, str) else list(targets)
        return model, LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["lora_alpha"]), bias="none",
                                 lora_dropout=float(lora["lora_dropout"]), target_modules=targets)
    model = apply_adapter(model, model_path)
    cfg = model.peft_config["default"]
    cfg.inference_mode = False
    logger.info("continuing the adapter in %s (its own LoRA settings: r=%s alpha=%s dropout=%s on %s)", model_path,
                cfg.r, cfg.lora_alpha, cfg.lora_dropout, sorted(cfg.target_modules))
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
    return model, None


def _resume_point(resume_from_checkpoint, out: Path, options: dict) -> str | None:
    """The checkpoint to resume from (checked against the saved options), or None for a fresh run."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume_from_checkpoint is None:
        if out.is_dir() and get_last_checkpoint(str(out)):
            raise UsageError(f"{out} holds checkpoints of an earlier run: pass --resume_from_checkpoint last to "
                             "continue it, or choose a new --output_dir")
        return None
    if resume_from_checkpoint == "last":
        path = get_last_checkpoint(str(out)) if out.is_dir() else None
        if path is None:
            raise FileNotFoundError(f"resume_from_checkpoint=last: no checkpoint-* in {out}")
    else:
        path = resume_from_checkpoint
        if not Path(path).is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint: {path} not found")
    saved_file = Path(path).parent / CONFIG_NAME
    if not saved_file.is_file():
        raise FileNotFoundError(f"{saved_file}: the options of the run to resume are missing")
    saved = json.loads(saved_file.read_text())
    changed = sorted(k for k in options if k not in RESUMABLE and saved.get(k) != options[k])
    if changed:
        raise UsageError(f"{path}: cannot resume exactly with changed options: " +
                         ", ".join(f"{k} {saved.get(k)!r} -> {options[k]!r}" for k in changed))
    return str(path)


def _log_callback(log_path: Path):
    from transformers import TrainerCallback

    class TrainLog(TrainerCallback):
        """Appends every logged metric dict to ``train_log.jsonl``; a non-finite loss stops the run."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            if "loss" in logs and not math.isfinite(logs["loss"]):
                raise RunError(f"non-finite loss {logs['loss']} at step {state.global_step}")

    return TrainLog()


def _save_adapter(trainer, out: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    bad = [n for n, p in model.named_parameters() if "lora_" in n and not torch.isfinite(p).all()]
    if bad:
        raise RunError(f"training produced non-finite LoRA weights ({len(bad)} tensors, e.g. {bad[0]}); not saved")
    if trainer.args.should_save:
        model.save_pretrained(str(out), selected_adapters=["default"], safe_serialization=True)


def _grpo_config(o: dict, out: Path, schedule: dict, records: int, torch_dtype, device: str):
    from trl import GRPOConfig

    steps_per_epoch = records // schedule["prompts"] * schedule["optimizer_steps"]
    if steps_per_epoch == 0:
        raise UsageError(f"{records} usable records but one generation batch needs {schedule['prompts']} prompts "
                         "(lower --batch_size or --grad_accum, or add records)")
    save_steps = o["save_steps"]
    if save_steps is None:  # upstream: about 50 checkpoints per epoch
        save_steps = max(1, steps_per_epoch // 50)
        save_steps = -(-save_steps // schedule["optimizer_steps"]) * schedule["optimizer_steps"]
    elif save_steps % schedule["optimizer_steps"]:
        raise UsageError(f"save_steps must be a multiple of {schedule['optimizer_steps']} (the optimizer steps of one "
                         "generation batch), so that a checkpoint resumes exactly")
    return GRPOConfig(
        output_dir=str(out), learning_rate=o["lr"], num_train_epochs=o["epochs"],
        max_steps=-1 if o["max_steps"] is None else int(o["max_steps"]),
        per_device_train_batch_size=o["batch_size"], gradient_accumulation_steps=o["grad_accum"],
        steps_per_generation=schedule["steps_per_generation"], num_generations=o["num_generations"],
        beta=o["beta"], scale_rewards=bool(o["scale_rewards"]), loss_type=o["loss_type"],
        max_completion_length=o["max_completion_length"], temperature=o["temperature"], top_p=o["top_p"],
        top_k=o["top_k"],
        warmup_steps=o["warmup_steps"], bf16=torch_dtype == torch.bfloat16, fp16=False, use_cpu=device == "cpu",
        seed=o["seed"], logging_steps=o["logging_steps"], save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500, report_to="none", remove_unused_columns=False,
        activation_checkpointing=o["gradient_checkpointing"], dataloader_num_workers=0, log_completions=False,
        shuffle_dataset=bool(o["shuffle_dataset"]))


def grpo(base_model_path: str, data_path: str, output_dir: str, model_path: str | None = None,
         epochs: int = D["epochs"], lr: float = D["lr"], batch_size: int = D["batch_size"],
         grad_accum: int = D["grad_accum"], max_steps: int | None = None, num_generations: int = D["num_generations"],
         beta: float = D["beta"], scale_rewards: bool = D["scale_rewards"], loss_type: str = D["loss_type"],
         max_prompt_length: int = D["max_prompt_length"], max_completion_length: int = D["max_completion_length"],
         temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
         warmup_steps: int = D["warmup_steps"], semantic_elements: bool = False,
         use_length_constraint: bool = False, target_length: int = 100, length_penalty_alpha: float = 0.1,
         length_penalty_delta: float = 0.5, encourage_target_length: bool = False, prepend_to_prompt: bool = False,
         system_prompt: str = SYSTEM_PROMPT, lora_r: int = LORA_DEFAULTS["r"],
         lora_alpha: int = LORA_DEFAULTS["lora_alpha"], lora_dropout: float = LORA_DEFAULTS["lora_dropout"],
         target_modules: str = ",".join(LORA_DEFAULTS["target_modules"]), device: str = "auto", dtype: str = "auto",
         seed: int = 42, resampler: str = "sinc", save_steps: int | None = None, logging_steps: int = 5,
         resume_from_checkpoint: str | None = None, skip_bad_records: bool = False,
         gradient_checkpointing: bool = False, shuffle_dataset: bool = True) -> dict:
    """GRPO-train a LoRA adapter of the Qwen2.5-Omni thinker on audio question answering.

    Args:
        base_model_path: local Qwen2.5-Omni directory (full Omni or thinker-only).
        data_path: JSON/JSONL records with audio_id, question (or instruction), answer and optional choices.
        output_dir: where the adapter, train_config.json, train_log.jsonl and checkpoint-N folders go.
        model_path: an SFT adapter directory to continue (it is also the frozen reference policy).
        epochs: passes over the records (upstream 1).
        lr: learning rate, decayed linearly to 0 (upstream 1e-6).
        batch_size: completions per device per micro-step (upstream 2).
        grad_accum: micro-steps per optimizer step (upstream 1).
        max_steps: stop after this many optimizer steps (default: the epochs).
        num_generations: completions sampled per prompt (upstream 4; its README command uses 6).
        beta: KL coefficient against the reference policy (upstream 0.01).
        scale_rewards: divide advantages by the group's reward std (upstream on).
        loss_type: TRL loss aggregation (upstream grpo).
        max_prompt_length: prompts over this many tokens, audio included, are bad records (upstream 512).
        max_completion_length: new tokens per completion (upstream 512).
        temperature: rollout sampling temperature (TRL's default).
        top_p: rollouts sample from the smallest token set holding this probability (TRL's default 1.0: all).
        top_k: rollouts sample from the k likeliest tokens (TRL's default 0: all).
        warmup_steps: linear warm-up steps (upstream 0).
        semantic_elements: reward the three-section format (think, semantic_elements, answer).
        use_length_constraint: add upstream's length reward on the <think> words.
        target_length: the length reward's target word count.
        length_penalty_alpha: the length reward's slope.
        length_penalty_delta: the length reward's offset.
        encourage_target_length: also reward approaching target_length from below.
        prepend_to_prompt: put the multiple-choice instruction (with target_length) before each question.
        system_prompt: the system message.
        lora_r: LoRA rank of a fresh adapter.
        lora_alpha: LoRA alpha of a fresh adapter.
        lora_dropout: LoRA dropout of a fresh adapter.
        target_modules: comma-separated module names a fresh adapter wraps.
        device: auto (cuda when available), cpu or cuda.
        dtype: auto (bfloat16 on cuda, float32 on cpu), float32 or bfloat16.
        seed: seed of the adapter init, the data order and the sampling.
        resampler: sinc (the model card's), soxr or librosa.
        save_steps: optimizer steps between checkpoints (default about 50 per epoch, as upstream; 0: none).
        logging_steps: optimizer steps between train_log.jsonl entries.
        resume_from_checkpoint: a checkpoint-N folder, or last.
        skip_bad_records: leave invalid records out (listed in a warning) instead of stopping.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        shuffle_dataset: shuffle the records every epoch (false: the file's order, e.g. classes alternating).
    """
    options = dict(locals())
    from fusionaudio.audsem.grpo_data import dataset_rows, load_grpo_records
    from fusionaudio.audsem.processor import OmniAudioProcessor, check_resampler
    from fusionaudio.loading.weights import resolve_dtype
    from fusionaudio.sampling import sampling_options

    check_resampler(resampler)
    if not sampling_options({"do_sample": True}, temperature=temperature, top_p=top_p, top_k=top_k)["do_sample"]:
        raise UsageError("temperature must be > 0: GRPO compares sampled completions of a prompt")
    out = Path(output_dir)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    torch_dtype = resolve_dtype(("bfloat16" if device.startswith("cuda") else "float32") if dtype == "auto" else dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for but CUDA is not available")
    if torch_dtype not in (torch.float32, torch.bfloat16):
        raise UsageError(f"dtype must be float32 or bfloat16 for training, got {dtype}")
    resume = _resume_point(resume_from_checkpoint, out, options)
    from accelerate import PartialState

    schedule = generation_schedule(batch_size, grad_accum, num_generations, PartialState().num_processes)
    processor = OmniAudioProcessor.from_pretrained(base_model_path)
    records = load_grpo_records(
        data_path, processor, semantic_elements=semantic_elements, prepend_to_prompt=prepend_to_prompt,
        target_length=target_length, system_prompt=system_prompt, resampler=resampler,
        max_prompt_length=max_prompt_length, skip_bad=skip_bad_records)
    config = _grpo_config(options, out, schedule, len(records), torch_dtype, device)
    return _train(options, out, config, processor, records, dataset_rows(records, system_prompt), torch_dtype, resume)


def _train(o: dict, out: Path, config, processor, records, rows, torch_dtype, resume) -> dict:
    from datasets import Dataset

    from fusionaudio.audsem.grpo_trainer import AudioGRPOTrainer

    lora = dict(r=o["lora_r"], lora_alpha=o["lora_alpha"], lora_dropout=o["lora_dropout"],
                target_modules=o["target_modules"])
    torch.manual_seed(o["seed"])
    model, peft_config = _build_policy(o["base_model_path"], o["model_path"], torch_dtype, config.device, lora)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(o, indent=2))
    if resume is None:
        (out / LOG_NAME).write_text("")
    funcs = reward_functions(o["semantic_elements"], o["use_length_constraint"], o["target_length"],
                             o["length_penalty_alpha"], o["length_penalty_delta"], o["encourage_target_length"])
    trainer = AudioGRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=Dataset.from_list(rows),
                               peft_config=peft_config, callbacks=[_log_callback(out / LOG_NAME)],
                               audio_processor=processor, feature_dtype=torch_dtype, resampler=o["resampler"])
    logger.info("GRPO on %d records: %s", len(records), json.dumps({k: o[k] for k in ("num_generations", "beta", "lr")}))
    start = 0 if resume is None else json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"]
    trainer.train(resume_from_checkpoint=resume)
    steps = trainer.state.global_step
    if steps <= start:
        raise RunError(f"no optimizer step was taken (the run was already at step {start})")
    _save_adapter(trainer, out)
    history = trainer.state.log_history
    return {"output_dir": str(out), "steps": steps, "records": len(records),
            "rewards": [h["reward"] for h in history if "reward" in h],
            "checkpoints": sorted(p.name for p in out.glob("checkpoint-*"))}


def main(argv=None) -> int:
    from fusionaudio.commands import function_main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return function_main(grpo, "python -m fusionaudio.audsem.grpo", argv)


if __name__ == "__main__":
    raise SystemExit(main())
