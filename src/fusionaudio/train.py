"""Fine-tune GAMA / FusionAudio: the reference trainer's options, one process or many.

    python -m fusionaudio.train --base_model BASE_DIR --data_path train.json --output_dir out \\
        --batch_size 128 --micro_batch_size 4 --num_epochs 3 --learning_rate 3e-4

    torchrun --nproc_per_node 8 -m fusionaudio.train ...      # or scripts/train/train.sh

Options keep the reference's names, defaults and meanings (``gama_finetune.py``): global
``batch_size``; gradient accumulation ``batch_size // micro_batch_size // world_size``;
AdamW (weight decay 0, gradient clipping at 1.0), linear warm-up then linear decay;
``val_set_size`` records held out for the eval loss every ``eval_steps``; a checkpoint
every ``save_steps``. Differences, on purpose:

* ``base_model`` is a base directory, or a fine-tuned checkpoint (a ``.pth/.bin/
  .safetensors`` file or a ``checkpoint-N`` folder) to start from; then the base
  directory is ``base_dir``, else the one recorded in the checkpoint's
  ``training_args.json`` (the reference hard-codes it).
* Every record is validated before training (:func:`fusionaudio.data.select_records`);
  bad records stop the run with a report unless ``skip_bad_records``. Audio that fails
  to decode is never replaced by a dummy fbank: it is an error, or with
  ``skip_bad_records`` the example is dropped and listed in ``skipped_audio.txt``.
* Text-only records (``audio_id`` "empty") are batched apart from records with audio.
* Checkpoints hold only the trained tensors, in safetensors under this project's names,
  plus the full training state: ``resume_from_checkpoint`` continues exactly.
* ``trainable_params``: the reference's ``all | proj | qformer | qformer_all`` (LoRA always
  trained, Llama frozen), plus ``full`` (every parameter, the LLM too): a mode for tiny
  models trained from scratch, such as the bundled demo, not a reference mode.
* The Q-Former runs in eval mode (no dropout) even when trained, as in the reference.
* GPU: bf16 autocast with frozen weights stored in bf16 and trained ones in fp32 (the
  reference keeps everything in fp32); CPU: fp32. ``add_eos_token`` is accepted but, as in
  the reference, every training text gets EOS. Trackers (``report_to``) are off by default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .audio import AudioError, load_fbank_batch
from .collate import IGNORE_INDEX, Example, collate, make_examples, plan_micro_batches, shard_micro_batches
from .data import select_records
from .model.config import LoraSettings
from .model.keymap import local_to_reference
from .model.loading import CheckpointError, load_base, load_finetuned, load_tokenizer, read_config

log = logging.getLogger("fusionaudio.train")

WEIGHTS_NAME = "adapter_model.safetensors"  # trained tensors only; load_finetuned finds it in a folder
CONFIG_NAME = "fusionaudio_config.json"
ARGS_NAME = "training_args.json"
STATE_NAME = "trainer_state.json"

_AGGREGATOR_SIDE = ("audio_aggregator_layer_1", "audio_aggregator_layer_2", "audio_proj_qformer",
                    "audio_proj_audioenc", "audio_proj_norm_qformer", "audio_proj_norm_audioenc")
#: Substrings of the reference's parameter names that each mode trains (DESIGN.md section 2).
TRAINABLE_RULES = {
    "all": ("audio",),
    "proj": ("audio_proj",),
    "qformer": _AGGREGATOR_SIDE,
    "qformer_all": _AGGREGATOR_SIDE + ("audio_encoder", "Qformer", "query_tokens", "qformer_proj_norm"),
    "full": ("",),
}


# -- parameters --------------------------------------------------------------------------
def trainable_names(model, mode: str) -> list[str]:
    """Names of the parameters ``mode`` trains: LoRA always, plus those whose reference name
    contains one of ``TRAINABLE_RULES[mode]`` (``full``: everything)."""
    if mode not in TRAINABLE_RULES:
        raise ValueError(f"trainable_params must be one of {sorted(TRAINABLE_RULES)}, got {mode!r}")
    keys = TRAINABLE_RULES[mode]
    return [n for n, _ in model.named_parameters()
            if ".lora_" in n or any(k in local_to_reference(n) for k in keys)]


def set_trainable(model, mode: str) -> list[str]:
    """Freeze everything but ``trainable_names(model, mode)``; returns those names."""
    names = set(trainable_names(model, mode))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return [n for n, _ in model.named_parameters() if n in names]


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of the Llama layers, non-reentrant (so LoRA gets
    gradients even when the input embeddings need none)."""
    llm = model.llm
    if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.x
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# -- model -----------------------------------------------------------------------------------
def _is_checkpoint(path: Path) -> bool:
    return path.is_file() or (path / ARGS_NAME).is_file() or (path / WEIGHTS_NAME).is_file()


def resolve_start(base_model: str, base_dir: str | None = None) -> tuple[Path, Path | None]:
    """(base directory, fine-tuned checkpoint to start from or None) for ``--base_model``."""
    path = Path(base_model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"base_model not found: {path}")
    if not _is_checkpoint(path):
        return path, None
    if base_dir is None:
        args_file = (path.parent if path.is_file() else path) / ARGS_NAME
        if not args_file.is_file():
            raise ValueError(f"{path} is a fine-tuned checkpoint: give its base directory with --base_dir "
                             f"(no {ARGS_NAME} beside it records one)")
        base_dir = json.loads(args_file.read_text())["base_dir"]
    return Path(base_dir).expanduser(), path


def build_model(base_dir, lora: LoraSettings, device, dtype=torch.float32, start_checkpoint=None):
    """The base model with LoRA (``lora``) injected, optionally a fine-tuned checkpoint on top.

    A base folder written by this project that already holds LoRA weights keeps them; its
    LoRA shape (r, alpha, target modules) must then match ``lora`` (dropout may differ)."""
    config, layout = read_config(Path(base_dir))
    if layout == "local" and config.lora is not None:
        model = load_base(base_dir, device=device, dtype=dtype, lora=True)
        have = (config.lora.r, config.lora.alpha, sorted(config.lora.target_modules))
        if have != (lora.r, lora.alpha, sorted(lora.target_modules)):
            raise ValueError(f"{base_dir} already holds LoRA weights with r={have[0]}, alpha={have[1]}, "
                             f"targets={have[2]}: pass the same --lora_r/--lora_alpha/--lora_target_modules")
        for name, module in model.named_modules():  # peft uses Identity for dropout 0
            if name.endswith(".lora_dropout"):
                module["default"] = torch.nn.Dropout(lora.dropout) if lora.dropout > 0 else torch.nn.Identity()
        model.config.lora = lora
    else:
        model = load_base(base_dir, device=device, dtype=dtype, lora=False)
        model.enable_lora(lora)
        model.to(device)
    if start_checkpoint is not None:
        load_finetuned(model, start_checkpoint)
    return model, load_tokenizer(base_dir)


# -- audio -----------------------------------------------------------------------------------
class AudioBatcher:
    """fbanks for a micro-batch, computed in one batched pass on the training device.

    A clip that fails to decode raises :class:`AudioError` naming it; with ``skip_bad`` the
    example is dropped instead and the file is appended to ``skipped_log``. ``cache`` keeps
    each clip's fbank in CPU memory (worth it for small data sets and several epochs)."""

    def __init__(self, device, skip_bad: bool = False, cache: bool = False, skipped_log: Path | None = None):
        self.device, self.skip_bad, self.skipped_log = torch.device(device), skip_bad, skipped_log
        self.cache: dict[Path, torch.Tensor] | None = {} if cache else None

    def __call__(self, examples: list[Example]) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Example]]:
        """``(fbanks [U, 1024, 128] of the U distinct clips, index of each kept example's clip,
        kept examples)``; ``(None, None, examples)`` for text-only examples."""
        if not examples[0].has_audio:
            return None, None, examples
        clips = list(dict.fromkeys(e.audio for e in examples))
        todo = [p for p in clips if self.cache is None or p not in self.cache]
        fresh, bad = {}, {}
        if todo:
            fbanks, infos, failures = load_fbank_batch(todo, device=self.device, errors="collect")
            fresh = dict(zip([p for i, p in enumerate(todo) if i not in failures], fbanks))
            bad = {todo[i]: err for i, err in failures.items()}
            if self.cache is not None:
                self.cache.update({p: f.cpu() for p, f in fresh.items()})
        if bad:
            if not self.skip_bad:
                raise AudioError(f"{len(bad)} audio file(s) failed to load (pass --skip_bad_records to drop them): "
                                 + "; ".join(str(e) for e in bad.values()))
            log.warning("dropping %d example(s) whose audio failed to load: %s", len(bad), list(map(str, bad)))
            if self.skipped_log is not None:
                with open(self.skipped_log, "a", encoding="utf-8") as f:
                    f.writelines(f"{p}\t{e}\n" for p, e in bad.items())
        kept = [e for e in examples if e.audio not in bad]
        if not kept:
            return None, None, []
        clips = [p for p in clips if p not in bad]
        rows = [fresh[p] if p in fresh else self.cache[p] for p in clips]
        index = torch.tensor([clips.index(e.audio) for e in kept], device=self.device)
        return torch.stack([r.to(self.device) for r in rows]), index, kept


def forward_batch(model, examples: list[Example], fbank, index, pad_id: int, padding_side: str = "left"):
    """Model output for one micro-batch; each distinct clip is encoded once."""
    b = collate(examples, pad_id, padding_side)
    embeds = None if fbank is None else model.encode_audio(fbank)[index]
    return model(b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], audio_embeds=embeds), b


# -- distributed -------------------------------------------------------------------------------
def init_distributed(device: str = "auto") -> tuple[int, int, int, torch.device]:
    """(rank, local_rank, world_size, device). Under torchrun (``WORLD_SIZE`` > 1) joins the
    process group: nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, local, world, dev


def _buckets(tensors, size: int = 1 << 24):
    bucket, n = [], 0
    for t in tensors:
        bucket.append(t)
        n += t.numel()
        if n >= size:
            yield bucket
            bucket, n = [], 0
    if bucket:
        yield bucket


def allreduce_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks. A parameter no rank computed a gradient for keeps
    ``grad=None`` (so the optimizer skips it, as in a single process)."""
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in live]):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(part.view_as(g))


def _mean_over_ranks(values: list[float], world: int, device) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


# -- checkpoints ----------------------------------------------------------------------------
def save_trained(model, names: list[str], out_dir: Path, args: dict) -> None:
    """Write the trained tensors (``adapter_model.safetensors``), the model config and the
    run's options to ``out_dir``: loadable by ``load_model(base, out_dir)``."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    state = {n: params[n].detach().contiguous().cpu() for n in names}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt", "layout": "fusionaudio",
                                                             "content": "trained parameters only"})
    model.config.save(out_dir / CONFIG_NAME)
    (out_dir / ARGS_NAME).write_text(json.dumps(args, indent=2, default=str) + "\n")


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": [random.getstate()[0], list(random.getstate()[1]),
                                                        random.getstate()[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def _plot_loss(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no loss curve")
        return
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Tracker:
    """Optional experiment trackers (``report_to``: none | tensorboard | wandb, comma-separated)."""

    def __init__(self, report_to: str, output_dir: Path, run_name: str, project: str, config: dict):
        names = {s.strip() for s in str(report_to or "none").split(",")} - {"none", ""}
        unknown = names - {"tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"report_to: unknown tracker(s) {sorted(unknown)} (none, tensorboard, wandb)")
        self.tb = self.wandb = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(output_dir / "runs"))
        if "wandb" in names:
            import wandb

            self.wandb = wandb
            wandb.init(project=project, name=run_name or None, config=config, dir=str(output_dir))

    def log(self, metrics: dict, step: int) -> None:
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# -- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_loss(model, examples, batches, audio: AudioBatcher, pad_id, padding_side, autocast,
                  rank: int = 0, world: int = 1) -> float:
    """Token-weighted mean next-token loss over ``batches`` (shared across ranks)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=model.device)
    for mb in batches[rank::world]:
        fbank, index, kept = audio([examples[i] for i in mb])
        if not kept:
            continue
        with autocast():
            out, b = forward_batch(model, kept, fbank, index, pad_id, padding_side)
        n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += torch.tensor([out.loss.item() * n, n], dtype=torch.float64, device=model.device)
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def split_examples(tok, records, data_path, cutoff_len, train_on_inputs, template, val_set_size: int,
                   seed: int) -> tuple[list[Example], list[Example]]:
    """Tokenise the records and split off ``val_set_size`` of them (seeded) for evaluation;
    records left with no target token after truncation are dropped with a warning."""
    examples = make_examples(tok, records, data_path, cutoff_len, train_on_inputs, template)
    targets = [e for e in examples if any(x != IGNORE_INDEX for x in e.labels[1:])]
    if len(targets) < len(examples):
        log.warning("%d record(s) have no target tokens after truncation to cutoff_len=%d; left out",
                    len(examples) - len(targets), cutoff_len)
    if val_set_size >= len(targets):
        raise ValueError(f"val_set_size={val_set_size} leaves no training data ({len(targets)} records)")
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed)).tolist()
    return [targets[i] for i in perm[val_set_size:]], [targets[i] for i in perm[:val_set_size]]


def train_step(model, params, optimizer, scheduler, window: list[list[Example]], audio: AudioBatcher,
               pad_id: int, padding_side: str, autocast, world: int = 1,
               max_grad_norm: float = 1.0) -> tuple[float, int, float]:
    """One optimizer step over the micro-batches in ``window`` (gradient accumulation; each
    micro-batch's mean loss weighs 1/len(window)), gradients averaged over ranks, clipped.
    Returns (this rank's loss, examples used, gradient norm)."""
    model.train()
    model.qformer.eval()  # the reference never lets the Q-Former into train mode
    loss_sum, seen = 0.0, 0
    for examples in window:
        fbank, index, kept = audio(examples)
        if not kept:
            continue
        with autocast():
            out, _ = forward_batch(model, kept, fbank, index, pad_id, padding_side)
        (out.loss / len(window)).backward()
        loss_sum += out.loss.item() / len(window)
        seen += len(kept)
    if world > 1:
        allreduce_gradients(params, world)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)) if max_grad_norm else 0.0
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, seen, grad_norm


# -- the command -----------------------------------------------------------------------------
def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return [str(v) for v in value]


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
    # LoRA
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
    skip_bad_records: bool = False,
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
            .pth/.bin/.safetensors file or a checkpoint-N folder).
        data_path: JSON or JSONL records {audio_id, instruction, input, output}.
        output_dir: checkpoints, logs, loss curve and the final trained tensors.
        base_dir: the base directory when base_model is a checkpoint (default: the one
            recorded in the checkpoint's training_args.json).
        batch_size: global batch (all processes); micro_batch_size: per forward pass.
        num_epochs: passes over the data (fractions allowed); max_steps > 0 overrides it.
        cutoff_len: maximum tokens per example (prompt + answer, BOS/EOS included).
        val_set_size: records held out for the eval loss (every eval_steps steps).
        train_on_inputs: False = loss on the answer only (prompt labels are -100).
        group_by_length: batch examples of similar length (less padding).
        group_by_audio: keep the questions of one clip in one micro-batch (each clip is
            encoded once per micro-batch): faster when clips have several questions.
        resume_from_checkpoint: a checkpoint-N folder of this command (exact continuation:
            weights, optimizer, scheduler, RNG, data position), "last"/True (the newest in
            output_dir), or a weights-only file/folder (loaded, then training starts at step 0).
        trainable_params: all | proj | qformer | qformer_all (the reference's modes; LoRA is
            always trained, Llama frozen) or full (everything, the LLM too: tiny models only).
        skip_bad_records: train on the valid records (the report goes to output_dir) and
            drop examples whose audio fails to decode, instead of stopping.
        device: auto | cpu | cuda:N (auto: cuda:LOCAL_RANK when CUDA is available).
        bf16: auto (on CUDA with bf16 support) | True | False.
        gradient_checkpointing: recompute the Llama activations in the backward pass.
        report_to: none | tensorboard | wandb (trackers; nothing reaches the network by default).
        cache_fbank: keep every clip's fbank in memory after its first use.
        save_steps, eval_steps, logging_steps: every so many optimizer steps (0 = never).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (base_model and data_path and output_dir):
        raise ValueError("--base_model, --data_path and --output_dir are required")
    options = {k: v for k, v in locals().items()}
    rank, _, world, dev = init_distributed(device)
    main = rank == 0
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    use_bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) if bf16 == "auto" else bool(bf16)
    if use_bf16 and dev.type == "cpu":
        log.warning("bf16 autocast on CPU is slow and rarely helps; training in fp32 anyway is advised")
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    if main:
        print("Training FusionAudio/GAMA with options:\n" + "\n".join(f"  {k}: {v}" for k, v in options.items()))

    # -- data: validate everything first -------------------------------------------------
    records, report = select_records(data_path, skip_bad=skip_bad_records, report_dir=out if main else None)
    base_path, start = resolve_start(base_model, base_dir)
    lora = LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout,
                        target_modules=_as_list(lora_target_modules))
    torch.manual_seed(seed)
    random.seed(seed)
    resume = _resolve_resume(resume_from_checkpoint, out)
    model, tok = build_model(base_path, lora, dev, torch.bfloat16 if use_bf16 else torch.float32,
                             None if resume else start)
    names = set_trainable(model, trainable_params)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    for p in params:  # master copies of trained weights in fp32
        p.data = p.data.float()
    if gradient_checkpointing:
        enable_checkpointing(model)
    if world > 1:  # identical starting weights on every rank
        for p in params:
            dist.broadcast(p.data, src=0)
    n_train, n_total = parameter_counts(model)
    if main:
        print(f"trainable params: {n_train:,} || all params: {n_total:,} || trainable%: {100 * n_train / n_total:.4f}"
              f" (trainable_params={trainable_params})")

    pad_id = tok.pad_token_id
    train_examples, val_examples = split_examples(tok, records, data_path, cutoff_len, train_on_inputs,
                                                  prompt_template_name, val_set_size, seed)

    accum = max(1, batch_size // micro_batch_size // world)
    n_micro = len(shard_micro_batches(plan_micro_batches(train_examples, micro_batch_size, seed, 0,
                                                         group_by_length, True, group_by_audio), rank, world))
    steps_per_epoch = math.ceil(n_micro / accum)
    total_steps = max_steps if max_steps and max_steps > 0 else math.ceil(num_epochs * steps_per_epoch)
    if main:
        print(f"{len(train_examples)} training / {len(val_examples)} validation examples; world size {world}, "
              f"micro-batch {micro_batch_size}, gradient accumulation {accum} (global batch "
              f"{micro_batch_size * accum * world}); {steps_per_epoch} steps per epoch, {total_steps} steps")

    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    audio = AudioBatcher(dev, skip_bad_records, cache_fbank, out / "skipped_audio.txt" if main else None)
    run_args = {**options, "base_dir": str(base_path.resolve()), "start_checkpoint": str(start) if start else None,
                "world_size": world, "gradient_accumulation_steps": accum, "trainable_names": names,
                "bf16": use_bf16}
    state = {"global_step": 0, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "world_size": world,
             "gradient_accumulation_steps": accum, "seed": seed, "n_train": len(train_examples), "log_history": []}
    if resume is not None:
        state = _resume(resume, model, optimizer, scheduler, state, names, rank, dev)
    history = state["log_history"]
    tracker = _Tracker(report_to, out, wandb_run_name, wandb_project, options) if main else None
    val_batches = plan_micro_batches(val_examples, micro_batch_size, seed, 0, shuffle=False,
                                     group_by_audio=group_by_audio)

    def save_checkpoint(step: int) -> None:
        ckpt = out / f"checkpoint-{step}"
        if main:
            save_trained(model, names, ckpt, run_args)
            torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
            torch.save(scheduler.state_dict(), ckpt / "scheduler.pt")
            (ckpt / STATE_NAME).write_text(json.dumps({**state, "epoch": step / steps_per_epoch}, indent=1) + "\n")
        if world > 1:
            dist.barrier()  # the folder exists before other ranks write into it
        torch.save(_rng_state(), ckpt / f"rng_state_{rank}.pt")
        if main and save_total_limit:
            for old in sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))[:-save_total_limit]:
                shutil.rmtree(old)

    step = state["global_step"]
    bar = None
    if main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
    t0, seen = time.time(), 0
    log_file = open(out / "log.jsonl", "a", encoding="utf-8") if main else None
    while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        plan = shard_micro_batches(plan_micro_batches(train_examples, micro_batch_size, seed, epoch,
                                                      group_by_length, True, group_by_audio), rank, world)
        for s in range(first, steps_per_epoch):
            window = plan[s * accum:(s + 1) * accum]
            loss_sum, n, grad_norm = train_step(model, params, optimizer, scheduler,
                                                [[train_examples[i] for i in mb] for mb in window], audio,
                                                pad_id, padding_side, autocast, world, max_grad_norm)
            seen += n
            step += 1
            state["global_step"] = step
            (loss,) = _mean_over_ranks([loss_sum], world, dev)
            entry = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": loss,
                     "learning_rate": scheduler.get_last_lr()[0], "grad_norm": grad_norm}
            if val_batches and eval_steps and (step % eval_steps == 0 or step == total_steps):
                entry["eval_loss"] = evaluate_loss(model, val_examples, val_batches, audio, pad_id, padding_side,
                                                   autocast, rank, world)
            history.append(entry)
            if main:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                tracker.log({k: v for k, v in entry.items() if k != "step"}, step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{entry['learning_rate']:.2e}")
                if logging_steps and step % logging_steps == 0:
                    msg = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()}
                    (bar.write if bar is not None else print)(json.dumps(msg))
            if save_steps and step % save_steps == 0:
                save_checkpoint(step)
            if step >= total_steps:
                break

    elapsed = time.time() - t0
    if bar is not None:
        bar.close()
    summary = {"global_step": step, "output_dir": str(out), "train_seconds": round(elapsed, 2),
               "samples_per_second": round(seen * world / elapsed, 3) if elapsed > 0 else None,
               "last_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
               "eval_loss": next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None)}
    checksum = [float(sum(p.detach().double().sum() for p in params)),
                float(sum(p.detach().double().pow(2).sum() for p in params))]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, checksum)
        summary["rank_checksums"] = gathered
    if main:
        log_file.close()
        save_trained(model, names, out, run_args)
        (out / STATE_NAME).write_text(json.dumps({**state, "epoch": step / steps_per_epoch}, indent=1) + "\n")
        _plot_loss(history, out / "loss_curve.png")
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        tracker.close()
        print(json.dumps(summary))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _resolve_resume(value, output_dir: Path) -> Path | None:
    if value in (None, False, "", "False", "false"):
        return None
    if value is True or str(value).lower() in ("true", "last"):
        found = _latest_checkpoint(output_dir)
        if found is None:
            raise FileNotFoundError(f"resume_from_checkpoint={value!r}: no checkpoint-* in {output_dir}")
        return found
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume_from_checkpoint not found: {path}")
    return path


def _resume(path: Path, model, optimizer, scheduler, state: dict, names: list[str], rank: int, dev) -> dict:
    """Load a checkpoint into the run. A full checkpoint (``trainer_state.json``) restores the
    optimizer, scheduler, RNG and step; a weights-only file or folder just the weights."""
    loaded = set(load_finetuned(model, path))
    if not (path.is_dir() and (path / STATE_NAME).is_file()):
        log.info("%s holds weights only: loaded them, training starts at step 0", path)
        return state
    if loaded != set(names):
        raise CheckpointError(f"{path}: holds other trained tensors than trainable_params selects "
                              f"({len(loaded)} vs {len(names)}); resume with the options it was trained with")
    saved = json.loads((path / STATE_NAME).read_text())
    changed = [k for k in ("steps_per_epoch", "total_steps", "world_size", "gradient_accumulation_steps", "seed",
                           "n_train") if saved.get(k) != state[k]]
    if changed:
        log.warning("resuming with different %s than %s was trained with: the run continues but is not an exact "
                    "continuation", ", ".join(changed), path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=dev, weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng_state_{rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        log.warning("%s: no %s; random state not restored", path, rng_file.name)
    log.info("resumed from %s at step %d", path, saved["global_step"])
    return {**state, "global_step": saved["global_step"], "log_history": saved.get("log_history", [])}


def main(argv=None) -> None:
    """``python -m fusionaudio.train --help``"""
    import fire

    fire.Fire(train, command=argv, name="fusionaudio.train", serialize=lambda _: None)


if __name__ == "__main__":
    sys.exit(main())
