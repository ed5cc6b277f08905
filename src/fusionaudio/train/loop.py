"""Stage 3 of training: the loop, on Hugging Face ``accelerate``.

One process, DDP, FSDP or DeepSpeed: whatever ``accelerate launch`` / ``torchrun`` and an
accelerate config choose (the default is DDP over every process, gloo on CPU). The
engine averages gradients, runs gradient accumulation (``accelerator.accumulate``: no
gradient sync until the window's last micro-batch), mixed precision and clipping.

* Text-only micro-batches leave the audio side without gradients on that rank: DDP runs
  with ``find_unused_parameters=True`` (the stock way), so no rank waits for them and a
  parameter no rank used keeps ``grad=None`` as in one process.
* Every rank runs the same number of micro-batches of the same window size (the epoch's
  plan is extended cyclically), so the collectives line up.
* A non-finite loss stops the run before its backward; a non-finite gradient norm before
  the optimizer step: :class:`NonFiniteError` names the step and the batch's records.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusionaudio.gama.collate import IGNORE_INDEX, Example, collate, plan_micro_batches
from fusionaudio.train.batches import AudioBatcher, describe
from fusionaudio.train.checkpoints import NonFiniteError, save_checkpoint


def make_accelerator(device: str, use_bf16: bool, accum: int, trackers: list[str], out: Path):
    """The engine. ``device="cpu"`` forces CPU processes (gloo)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    return Accelerator(cpu=str(device) == "cpu", mixed_precision="bf16" if use_bf16 else "no",
                       gradient_accumulation_steps=accum, step_scheduler_with_optimizer=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                       log_with=trackers or None,
                       project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "runs")))


def rank_plan(batches: list[list[int]], rank: int, world: int, accum: int) -> list[list[int]]:
    """This rank's micro-batches: the plan extended cyclically to a multiple of
    ``world * accum`` (every rank runs whole windows, and as many as the others), then
    rank ``r`` takes ``r::world``. Step ``s`` of rank ``r`` is ``[s*accum, (s+1)*accum)``."""
    total = math.ceil(len(batches) / (world * accum)) * world * accum
    padded = [batches[i % len(batches)] for i in range(total)]
    return padded[rank::world]


def forward(wrapped, examples: list[Example], fbank, index, pad_id: int, padding_side: str):
    """The wrapped model's output for one micro-batch and its collated tensors."""
    b = collate(examples, pad_id, padding_side)
    dev = fbank.device if fbank is not None else next(wrapped.parameters()).device
    b = {k: v.to(dev) for k, v in b.items()}
    return wrapped(b["input_ids"], b["attention_mask"], b["labels"], fbank, index), b


def train_step(run: "Run", window: list[list[Example]], step: int) -> tuple[float, int, float]:
    """One optimizer step over ``window`` (``accum`` micro-batches). Returns (this rank's mean
    loss, examples used, gradient norm after synchronisation)."""
    acc, wrapped = run.accelerator, run.wrapped
    wrapped.train()
    run.model.qformer.eval()  # the reference never lets the Q-Former into train mode
    loss_sum, seen, grad_norm = 0.0, 0, float("nan")
    for examples in window:
        fbank, index, kept = run.audio(examples)
        with acc.accumulate(wrapped):
            # every rank runs every micro-batch (the collectives must line up): one whose
            # records were all dropped runs text-only with a zero loss
            out, _ = forward(wrapped, kept or examples, fbank, index, run.pad_id, run.padding_side)
            loss = out.loss if kept else out.loss * 0.0
            if not torch.isfinite(loss.detach()):
                raise NonFiniteError(f"step {step + 1}: the loss is {loss.item()} on {describe(kept, run.records)}; "
                                     "stopping (nothing of this step is saved)")
            acc.backward(loss)
            if acc.sync_gradients:
                norm = acc.clip_grad_norm_(run.params, run.max_grad_norm or float("inf"))
                grad_norm = float(norm) if norm is not None else float("nan")
                if norm is not None and not math.isfinite(grad_norm):
                    batch = [e for mb in window for e in mb]
                    raise NonFiniteError(f"step {step + 1}: the gradient norm is {grad_norm} (batch: "
                                         f"{describe(batch, run.records)}); stopping before the optimizer step")
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.item() / len(window)
        seen += len(kept)
    run.scheduler.step()
    return loss_sum, seen, grad_norm


@torch.no_grad()
def evaluate_loss(run: "Run") -> float:
    """Token-weighted mean next-token loss over the validation batches (shared across
    ranks; every rank runs as many forwards as the others)."""
    acc = run.accelerator
    run.wrapped.eval()
    batches = run.val_batches
    per_rank = math.ceil(len(batches) / acc.num_processes)
    mine = batches[acc.process_index::acc.num_processes]
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine = mine + [batches[0]] * (per_rank - len(mine))
    total = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for mb, w in zip(mine, weights):
        examples = [run.val_examples[i] for i in mb]
        fbank, index, kept = run.audio(examples)
        out, b = forward(run.wrapped, kept or examples, fbank, index, run.pad_id, run.padding_side)
        w = w if kept else 0.0
        n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += torch.tensor([out.loss.item() * n * w, n * w], dtype=torch.float64, device=acc.device)
    total = acc.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


@dataclass
class Run:
    """Everything the loop needs, built by :func:`fusionaudio.train.run.prepare`."""

    accelerator: object
    wrapped: torch.nn.Module          # what the engine returned from prepare()
    model: torch.nn.Module            # the GamaForCausalLM inside it
    params: list
    names: list[str]
    optimizer: object
    scheduler: object
    audio: AudioBatcher
    records: list[dict]
    train_examples: list[Example]
    val_examples: list[Example]
    val_batches: list[list[int]]
    out: Path
    run_args: dict
    state: dict
    pad_id: int
    padding_side: str = "left"
    micro_batch_size: int = 4
    accum: int = 1
    seed: int = 42
    group_by_length: bool = False
    group_by_audio: bool = False
    max_grad_norm: float = 1.0
    eval_steps: int = 0
    save_steps: int = 0
    save_total_limit: int | None = None
    history: list = field(default_factory=list)


def run_loop(run: Run, log) -> tuple[int, int, float]:
    """Train from ``run.state['global_step']`` to ``total_steps``; returns (step, examples
    seen by this rank, seconds)."""
    acc, state = run.accelerator, run.state
    spe, total = state["steps_per_epoch"], state["total_steps"]
    step, seen, t0 = state["global_step"], 0, time.time()
    while step < total:
        epoch, first = divmod(step, spe)
        plan = rank_plan(plan_micro_batches(run.train_examples, run.micro_batch_size, run.seed, epoch,
                                            run.group_by_length, True, run.group_by_audio),
                         acc.process_index, acc.num_processes, run.accum)
        for s in range(first, spe):
            window = [[run.train_examples[i] for i in mb] for mb in plan[s * run.accum:(s + 1) * run.accum]]
            loss_sum, n, grad_norm = train_step(run, window, step)
            seen += n
            step += 1
            state["global_step"] = step
            loss = acc.reduce(torch.tensor(loss_sum, dtype=torch.float64, device=acc.device), "mean").item()
            entry = {"step": step, "epoch": round(step / spe, 4), "loss": loss,
                     "learning_rate": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm}
            if run.val_batches and run.eval_steps and (step % run.eval_steps == 0 or step == total):
                entry["eval_loss"] = evaluate_loss(run)
            run.history.append(entry)
            log.write(entry)
            if run.save_steps and step % run.save_steps == 0:
                save_checkpoint(acc, run.wrapped, run.model, run.names, run.out, step, run.run_args,
                                {**state, "log_history": run.history, "epoch": step / spe}, run.save_total_limit)
            if step >= total:
                break
    return step, seen, time.time() - t0


def weight_checksums(params) -> list[float]:
    """(sum, sum of squares) of the trained weights: equal on every rank when in lock-step."""
    return [float(sum(p.detach().double().sum() for p in params)),
            float(sum(p.detach().double().pow(2).sum() for p in params))]
