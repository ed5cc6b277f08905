"""A training run from options to saved output: :func:`prepare` (engine, data, model,
optimizer, resume), then :func:`fusionaudio.train.loop.run_loop`, then :func:`finish`."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from types import SimpleNamespace

import torch

from fusionaudio.errors import UsageError
from fusionaudio.gama.collate import plan_micro_batches
from fusionaudio.loading.quantize import check_quantize
from fusionaudio.gama.data import select_records
from fusionaudio.train.batches import SKIPPED_NAME, AudioBatcher, split_examples
from fusionaudio.train.checkpoints import (STATE_NAME, drop_engine_model_weights, remove_stale_temporaries, resolve_resume,
                          resume_engine, resume_weights, save_trained, trained_state)
from fusionaudio.train.loop import Run, make_accelerator, weight_checksums
from fusionaudio.train.model_setup import (TrainingForward, build_model, enable_checkpointing, lora_settings, parameter_counts,
                          resolve_start, set_trainable, tokenizer_of)
from fusionaudio.train.reporting import RunLog, parse_report_to, plot_loss, start_trackers

log = logging.getLogger("fusionaudio.train")


def _engine(o: SimpleNamespace, out: Path):
    from accelerate import PartialState

    if str(o.device) not in ("auto", "cpu") and not str(o.device).startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {o.device!r}")
    cpu = str(o.device) == "cpu"
    ps = PartialState(cpu=cpu)
    dev = ps.device
    bf16 = o.bf16
    use_bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) if str(bf16) == "auto" else bool(bf16)
    if use_bf16 and dev.type == "cpu":
        log.warning("bf16 autocast on CPU is slow and rarely helps; training in fp32 is advised")
    accum = max(1, o.batch_size // o.micro_batch_size // ps.num_processes)
    return make_accelerator(o.device, use_bf16, accum, parse_report_to(o.report_to), out), use_bf16, accum


def _quantize(o: SimpleNamespace, sharded: bool) -> str | None:
    """QLoRA's base: the frozen Llama quantized; not with modes that train it, nor with sharded engines."""
    quantize = check_quantize(o.quantize)
    if quantize and o.trainable_params in ("full", "full_frozen_encoder"):
        raise UsageError(f"--quantize {quantize} keeps the Llama frozen, but --trainable_params {o.trainable_params} "
                         "trains it; use all, proj, qformer or qformer_all")
    if quantize and sharded:
        raise UsageError(f"--quantize {quantize} runs on one process or DDP, not FSDP / DeepSpeed")
    return quantize


def _check_audio(audio: AudioBatcher, train_ex, val_ex, acc):
    """The batch-time front end on every clip, once, before training (the clips are split
    over the processes and the verdicts shared); bad clips stop the run (naming the
    records) or, with skip_bad_records, their examples are dropped."""
    examples = train_ex + val_ex
    clips = sorted({e.audio for e in examples if e.has_audio})
    mine = audio.check(clips[acc.process_index::acc.num_processes])
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        verdicts = gather_object([sorted(mine.items())])
        audio.bad.update({p: why for part in verdicts for p, why in part})
        audio.checked.update(p for p in clips if p not in audio.bad)
    bad = {p: audio.bad[p] for p in clips if p in audio.bad}
    if not bad:
        return train_ex, val_ex
    audio.report(bad, examples)  # raises unless skip_bad
    return [e for e in train_ex if e.audio not in bad], [e for e in val_ex if e.audio not in bad]


def _data(o, acc, out: Path, tok, audio_device):
    records, report = select_records(o.data_path, skip_bad=o.skip_bad_records,
                                     report_dir=out if acc.is_main_process else None)
    records = [{**r, "_index": i} for r, i in zip(records, report.ok_indices)]
    train_ex, val_ex = split_examples(tok, records, o.data_path, o.cutoff_len, o.train_on_inputs,
                                      o.prompt_template_name, o.val_set_size, o.seed)
    audio = AudioBatcher(audio_device, o.skip_bad_records, o.cache_fbank,
                         out / SKIPPED_NAME if acc.is_main_process else None, records)
    if o.check_audio:
        train_ex, val_ex = _check_audio(audio, train_ex, val_ex, acc)
    if not train_ex:
        raise ValueError(f"{o.data_path}: no training example left after dropping the bad records")
    return records, train_ex, val_ex, audio


def engine_text(acc) -> str:
    """``one process on cpu`` / ``DDP (MULTI_GPU), 8 processes``: how the run is spread, in words."""
    kind = acc.distributed_type.value
    if kind == "NO":
        return f"one process on {acc.device}"
    names = {"MULTI_GPU": "DDP", "MULTI_CPU": "DDP on CPUs", "FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}
    return f"{names.get(kind, kind)} ({kind}), {acc.num_processes} processes"


def prepare(o: SimpleNamespace, options: dict) -> Run:
    """Engine, data, model, optimizer and scheduler; a resumed run's state restored."""
    from accelerate.utils import DistributedType, set_seed
    from transformers import get_linear_schedule_with_warmup

    out = Path(o.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc, use_bf16, accum = _engine(o, out)
    quantize = _quantize(o, acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED))
    world, main = acc.num_processes, acc.is_main_process
    if main:
        remove_stale_temporaries(out)
        print("Training FusionAudio/GAMA with options:\n" + "\n".join(f"  {k}: {v}" for k, v in options.items()))
    base_path, start = resolve_start(o.base_model, o.base_dir)
    lora = lora_settings(o.lora_r, o.lora_alpha, o.lora_dropout, o.lora_target_modules)
    set_seed(o.seed)
    random.seed(o.seed)
    resume = resolve_resume(o.resume_from_checkpoint, out)
    tok = tokenizer_of(base_path)
    say = print if main else (lambda *a, **k: None)
    say(f"checking the records of {o.data_path} (text, lengths{', every clip' if o.check_audio else ''}) ...",
        flush=True)
    records, train_ex, val_ex, audio = _data(o, acc, out, tok, acc.device)  # bad data stops before the model loads
    sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    dtype = torch.bfloat16 if use_bf16 and not sharded else torch.float32  # frozen weights in bf16
    say(f"loading the model from {base_path}" + (f" and {start}" if start and not resume else "") + " ...", flush=True)
    model, _ = build_model(base_path, lora, acc.device, dtype, None if resume else start, tok, quantize)
    names = set_trainable(model, o.trainable_params)
    full_resume = resume is not None and resume_weights(resume, model, names)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # master copies of trained weights in fp32
        p.data = p.data.float()
    if o.gradient_checkpointing or quantize:
        enable_checkpointing(model)
    n_train, n_total = parameter_counts(model)
    n_micro = len(plan_micro_batches(train_ex, o.micro_batch_size, o.seed, 0, o.group_by_length, True,
                                     o.group_by_audio))
    steps_per_epoch = math.ceil(n_micro / (world * accum))
    total_steps = o.max_steps if o.max_steps and o.max_steps > 0 else math.ceil(o.num_epochs * steps_per_epoch)
    if main:
        print(f"trainable params: {n_train:,} || all params: {n_total:,} || trainable%: {100 * n_train / n_total:.4f}"
              f" (trainable_params={o.trainable_params}, lora={'none' if lora is None else lora.target_modules})")
        print(f"{len(train_ex)} training / {len(val_ex)} validation examples; {engine_text(acc)}, micro-batch {o.micro_batch_size}, gradient accumulation {accum} (global batch "
              f"{o.micro_batch_size * accum * world}); {steps_per_epoch} steps per epoch, {total_steps} steps")
    optimizer = torch.optim.AdamW(params, lr=o.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=o.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, o.warmup_steps, total_steps)
    drop_engine_model_weights(acc)
    wrapped, optimizer, scheduler = acc.prepare(TrainingForward(model), optimizer, scheduler)
    run_args = {**options, "base_dir": str(base_path.resolve()), "start_checkpoint": str(start) if start else None,
                "world_size": world, "gradient_accumulation_steps": accum, "trainable_names": names,
                "bf16": use_bf16, "lora": "none" if lora is None else lora.target_modules,
                "engine": acc.distributed_type.value}
    state = {"global_step": 0, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "world_size": world,
             "gradient_accumulation_steps": accum, "seed": o.seed, "n_train": len(train_ex), "log_history": []}
    if full_resume:
        state = resume_engine(resume, acc, state)
    start_trackers(acc, parse_report_to(o.report_to), o.wandb_project, o.wandb_run_name, out, options)
    val_batches = plan_micro_batches(val_ex, o.micro_batch_size, o.seed, 0, shuffle=False,
                                     group_by_audio=o.group_by_audio)
    return Run(accelerator=acc, wrapped=wrapped, model=model, params=params, names=names, optimizer=optimizer,
               scheduler=scheduler, audio=audio, records=records, train_examples=train_ex, val_examples=val_ex,
               val_batches=val_batches, out=out, run_args=run_args, state=state, pad_id=tok.pad_token_id,
               padding_side=o.padding_side, micro_batch_size=o.micro_batch_size, accum=accum, seed=o.seed,
               group_by_length=o.group_by_length, group_by_audio=o.group_by_audio, max_grad_norm=o.max_grad_norm,
               eval_steps=o.eval_steps, save_steps=o.save_steps, save_total_limit=o.save_total_limit,
               history=state["log_history"])


def finish(run: Run, step: int, seen: int, elapsed: float) -> dict:
    """Save the trained tensors, the state, the loss curve and the summary."""
    acc, out, history = run.accelerator, run.out, run.history
    summary = {"global_step": step, "output_dir": str(out), "train_seconds": round(elapsed, 2),
               "samples_per_second": round(seen * acc.num_processes / elapsed, 3) if elapsed > 0 else None,
               "last_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
               "eval_loss": next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None),
               "engine": acc.distributed_type.value, "world_size": acc.num_processes}
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        summary["rank_checksums"] = gather_object([weight_checksums(run.params)])
    weights = trained_state(acc, run.wrapped, run.names)
    if acc.is_main_process:
        save_trained(run.model, run.names, out, run.run_args, weights)
        spe = run.state["steps_per_epoch"]
        (out / STATE_NAME).write_text(json.dumps({**run.state, "log_history": history, "epoch": step / spe},
                                                 indent=1) + "\n", encoding="utf-8")
        plot_loss(history, out / "loss_curve.png")
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(summary))
    acc.wait_for_everyone()
    return summary


def open_log(run: Run, o: SimpleNamespace) -> RunLog:
    return RunLog(run.accelerator, run.out, run.state["total_steps"], run.state["global_step"], o.logging_steps,
                  o.progress)
