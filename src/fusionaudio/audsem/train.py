"""LoRA SFT of the Qwen2.5-Omni thinker in the AudSemThinker format, loss on the assistant completion only.

Data: a JSON list or JSONL file of AudSem-style records ``{"audio_id", "instruction", "input", "output"}``;
``audio_id`` is absolute or relative to the data file's folder, ``output`` holds the three sections
(``<think>``, ``<semantic_elements>``, ``<answer>``). Every record is validated before training starts and
all bad ones are reported by index.

Each example is ``[system prompt] [user: audio + instruction] [assistant: output<|im_end|>]`` rendered with
the checkpoint's chat template; the prompt and the completion are tokenized separately, so the labels are
``-100`` on every system / user / audio / template token and on padding, and equal to the input ids on the
completion and its closing ``<|im_end|>``.

    python -m fusionaudio.audsem.train --base_model_path DIR --data_path train.json --output_dir runs/x \
        [--epochs 1 --lr 2e-4 --batch_size 4 --device cuda --dtype bfloat16]

The adapter is saved with peft as ``adapter_model.safetensors`` + ``adapter_config.json``, beside
``train_config.json`` (the arguments) and ``train_log.jsonl`` (loss per optimizer step).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from fusionaudio.audio import AudioError
from fusionaudio.records import RecordError
from fusionaudio.records import load_records as read_records_strict
from fusionaudio.audsem.config import DEFAULT_PROMPT_MODE, LORA_DEFAULTS, SYSTEM_PROMPT, TRAIN_DEFAULTS, build_instruction
from fusionaudio.audsem.processor import build_conversation, check_resampler, load_audio
from fusionaudio.audsem.loading import load_thinker
from fusionaudio.loading.quantize import check_quantize, prepare_for_training
from fusionaudio.loading.weights import resolve_dtype
from fusionaudio.audsem.processor import OmniAudioProcessor
from fusionaudio.structured import VARIANTS, parse_structured

logger = logging.getLogger(__name__)

__all__ = ["Record", "RecordError", "load_records", "build_batch", "add_lora", "mean_loss", "train"]

IGNORE_INDEX = -100
_REQUIRED = ("audio_id", "instruction", "output")


@dataclass
class Record:
    """A validated training example."""

    index: int
    audio_path: str
    instruction: str
    input: str
    output: str

    def user_text(self) -> str:
        """The instruction, with the optional ``input`` on a new line."""
        return f"{self.instruction.strip()}\n{self.input.strip()}" if self.input.strip() else self.instruction.strip()


def load_records(data_path, check_audio: bool = True, require_structured: bool = True,
                 structured_variant: str = "three") -> list[Record]:
    """Read and validate every record of ``data_path``; raise :class:`RecordError` listing all bad ones.

    Checks: each record is an object with string ``audio_id``, ``instruction``, ``output`` (``input``
    optional, a string); the audio file exists (and, with ``check_audio``, its header decodes); with
    ``require_structured`` the output parses completely (:func:`fusionaudio.structured.parse_structured`)
    in ``structured_variant`` (``"three"`` sections, or ``"two"``: think/answer, the GRPO model's format).
    """
    import soundfile as sf

    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    rows = read_records_strict(path)
    if not isinstance(rows, list) or not rows:
        raise RecordError(f"{path}: expected a non-empty JSON list or JSONL of records")
    records, errors = [], []
    for i, row in enumerate(rows):
        problems = []
        if not isinstance(row, dict):
            errors.append(f"record {i}: not an object")
            continue
        for key in _REQUIRED:
            if not isinstance(row.get(key), str) or not row[key].strip():
                problems.append(f"'{key}' missing or not a non-empty string")
        if row.get("input") is not None and not isinstance(row.get("input"), str):
            problems.append("'input' is not a string")
        audio_path = None
        if isinstance(row.get("audio_id"), str) and row["audio_id"].strip():
            audio_path = Path(row["audio_id"])
            audio_path = audio_path if audio_path.is_absolute() else path.parent / audio_path
            if not audio_path.is_file():
                problems.append(f"audio file {audio_path} not found")
            elif check_audio:
                try:
                    info = sf.info(str(audio_path))
                    if info.frames == 0:
                        problems.append(f"audio file {audio_path} has no samples")
                except (RuntimeError, sf.LibsndfileError) as exc:
                    problems.append(f"audio file {audio_path} cannot be decoded ({exc})")
        if require_structured and isinstance(row.get("output"), str) and row["output"].strip():
            parsed = parse_structured(row["output"], structured_variant)
            if not parsed["complete"]:
                fmt = "/".join(f"<{n}>" for n in VARIANTS[structured_variant])
                problems.append(f"output is not in the {fmt} format: " + "; ".join(parsed["issues"]))
        if problems:
            errors.append(f"record {i}: " + "; ".join(problems))
            continue
        records.append(Record(i, str(audio_path), row["instruction"], row.get("input") or "", row["output"].strip()))
    if errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  (+{len(errors) - 50} more)" if len(errors) > 50 else ""
        raise RecordError(f"{path}: {len(errors)} of {len(rows)} records are invalid:\n  {shown}{more}")
    return records


def build_batch(processor: OmniAudioProcessor, records: list[Record], prompt_mode: str = DEFAULT_PROMPT_MODE,
                system_prompt: str = SYSTEM_PROMPT, resampler: str = "sinc") -> dict:
    """Right-padded training tensors with completion-only ``labels`` for ``records``: the completion,
    its ``<|im_end|>`` and the newline the chat template writes after it (labelled as TRL's SFT does
    when it trains on the rendered assistant turn)."""
    tok = processor.tokenizer
    waves = []
    for r in records:
        try:
            waves.append(load_audio(r.audio_path, processor.sampling_rate, resampler=resampler))
        except AudioError as exc:
            raise AudioError(f"record {r.index}: {exc.problem}", exc.path) from exc
    prompts = [
        processor.apply_chat_template(build_conversation(build_instruction(r.user_text(), prompt_mode), True, system_prompt))
        for r in records
    ]
    feats = processor.audio_features(waves)
    prompts = processor.expand_audio_tokens(prompts, feats.pop("num_audio_tokens"))
    seqs, labels = [], []
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    for prompt, r in zip(prompts, records):
        p_ids = processor.encode(prompt)
        c_ids = processor.encode_user_text(r.output) + [tok.convert_tokens_to_ids(tok.eos_token)] + newline
        seqs.append(p_ids + c_ids)
        labels.append([IGNORE_INDEX] * len(p_ids) + c_ids)
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    label_t = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labels)):
        input_ids[i, : len(s)] = torch.tensor(s)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return dict(input_ids=input_ids, attention_mask=mask, labels=label_t, **feats)


def add_lora(model, r: int = LORA_DEFAULTS["r"], lora_alpha: int = LORA_DEFAULTS["lora_alpha"],
             lora_dropout: float = LORA_DEFAULTS["lora_dropout"], target_modules=LORA_DEFAULTS["target_modules"]):
    """Freeze ``model`` and wrap it with trainable LoRA adapters (peft) on ``target_modules``."""
    from peft import LoraConfig, get_peft_model

    if isinstance(target_modules, str):
        target_modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    model.requires_grad_(False)
    cfg = LoraConfig(r=int(r), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout), bias="none",
                     target_modules=list(target_modules))
    return get_peft_model(model, cfg)


def training_model(base_model_path, dtype, device, lora: dict, quantize: str | None = None,
                   gradient_checkpointing: bool = False):
    """The thinker wrapped with trainable LoRA (``lora``: :func:`add_lora`'s options). ``quantize`` (``int8``,
    ``nf4``) is QLoRA: the language model frozen in 8 / 4 bits, the LoRA in float32, activation checkpointing on."""
    quantize = check_quantize(quantize)
    model = add_lora(load_thinker(base_model_path, dtype=dtype, device=device, quantize=quantize), **lora)
    if quantize:
        prepare_for_training(model)
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if quantize or gradient_checkpointing:
        model.base_model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def _to_device(batch: dict, device, dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items()}
    if "input_features" in out:
        out["input_features"] = out["input_features"].to(dtype)
    return out


@torch.no_grad()
def mean_loss(model, processor: OmniAudioProcessor, records: list[Record], batch_size: int = 4,
              prompt_mode: str = DEFAULT_PROMPT_MODE, system_prompt: str = SYSTEM_PROMPT) -> float:
    """Token-averaged completion loss of ``model`` (eval mode) over ``records``."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    total, count = 0.0, 0
    for start in range(0, len(records), batch_size):
        batch = build_batch(processor, records[start:start + batch_size], prompt_mode, system_prompt)
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        out = model(**_to_device(batch, param.device, param.dtype), use_cache=False)
        total += float(out.loss) * n
        count += n
    model.train(was_training)
    return total / count


def train(base_model_path: str, data_path: str, output_dir: str, epochs: int = TRAIN_DEFAULTS["epochs"],
          lr: float = TRAIN_DEFAULTS["lr"], batch_size: int = TRAIN_DEFAULTS["batch_size"],
          grad_accum: int = 1, max_steps: int | None = None, max_grad_norm: float | None = None,
          lora_r: int = LORA_DEFAULTS["r"], lora_alpha: int = LORA_DEFAULTS["lora_alpha"],
          lora_dropout: float = LORA_DEFAULTS["lora_dropout"],
          target_modules: str = ",".join(LORA_DEFAULTS["target_modules"]),
          prompt_mode: str = DEFAULT_PROMPT_MODE, system_prompt: str = SYSTEM_PROMPT,
          device: str = "cpu", dtype: str = "auto", seed: int = 42, weight_decay: float = 0.0,
          resampler: str = "sinc", lr_scheduler: str = "linear", structured_variant: str = "three",
          quantize: str = "none", gradient_checkpointing: bool = False) -> dict:
    """Fine-tune LoRA adapters on ``data_path`` and save them to ``output_dir``.

    Defaults follow AudSemThinker's SFT (LoRA r=8/alpha=16/dropout 0.05 on every ``q_proj`` and ``v_proj``,
    AdamW lr 2e-4 decayed linearly to 0 over the run with no warm-up (TRL's SFT default; ``--lr_scheduler
    constant`` keeps it fixed), 1 epoch, batch 4, the last partial batch kept (the Trainer's default);
    ``dtype="auto"`` is bfloat16 on CUDA, as the card trained, and float32 on CPU; ``resampler`` ``sinc``
    (the card's torchaudio resampling), ``soxr`` or ``librosa``. ``max_steps`` caps optimizer steps.
    ``structured_variant="two"`` validates targets in the two-section ``<think>``/``<answer>`` format
    (the GRPO model's) instead of the three-section one.
    Returns ``{"output_dir", "steps", "losses"}`` (loss per optimizer step).

    Options:
        quantize: none | int8 | nf4: QLoRA, the language model frozen in 8 / 4 bits (bitsandbytes) while the
            LoRA trains in float32, with activation checkpointing; the adapter loads over either base.
        gradient_checkpointing: recompute activations in the backward pass (less memory; on with quantize).
    """
    build_instruction("probe", prompt_mode)
    check_resampler(resampler)
    check_quantize(quantize)
    if lr_scheduler not in ("linear", "constant"):
        raise ValueError(f"lr_scheduler must be 'linear' or 'constant', got {lr_scheduler!r}")
    if dtype == "auto":
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    out = Path(output_dir)
    records = load_records(data_path, structured_variant=structured_variant)
    processor = OmniAudioProcessor.from_pretrained(base_model_path)
    torch_dtype = resolve_dtype(dtype)
    torch.manual_seed(seed)
    model = training_model(base_model_path, torch_dtype, device, dict(r=lora_r, lora_alpha=lora_alpha,
                           lora_dropout=lora_dropout, target_modules=target_modules), quantize, gradient_checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(records) / (batch_size * grad_accum))
    total_steps = steps_per_epoch * int(epochs) if max_steps is None else int(max_steps)
    decay = (lambda s: max(0.0, (total_steps - s) / total_steps)) if lr_scheduler == "linear" else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    logger.info("training %d records, %d optimizer steps, %d trainable params", len(records), total_steps,
                sum(p.numel() for p in params))

    out.mkdir(parents=True, exist_ok=True)
    args = dict(base_model_path=str(base_model_path), data_path=str(data_path), epochs=epochs, lr=lr,
                batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps, max_grad_norm=max_grad_norm,
                lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                prompt_mode=prompt_mode, system_prompt=system_prompt, dtype=dtype, seed=seed, weight_decay=weight_decay,
                resampler=resampler, lr_scheduler=lr_scheduler, quantize=quantize,
                gradient_checkpointing=gradient_checkpointing)
    (out / "train_config.json").write_text(json.dumps(args, indent=2))
    losses: list[float] = []
    step = 0
    with open(out / "train_log.jsonl", "w") as log:
        while step < total_steps:
            order = list(range(len(records)))
            rng.shuffle(order)
            batches = [[records[j] for j in order[k:k + batch_size]] for k in range(0, len(order), batch_size)]
            for g in range(0, len(batches), grad_accum):
                group = batches[g:g + grad_accum]
                step_loss = 0.0
                for chunk in group:
                    batch = _to_device(build_batch(processor, chunk, prompt_mode, system_prompt, resampler),
                                       device, torch_dtype)
                    loss = model(**batch, use_cache=False).loss
                    (loss / len(group)).backward()
                    step_loss += float(loss.detach()) / len(group)
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                lr_now = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(step_loss)
                log.write(json.dumps({"step": step, "loss": step_loss, "lr": lr_now}) + "\n")
                log.flush()
                logger.info("step %d/%d loss %.4f", step, total_steps, step_loss)
                if step >= total_steps:
                    break
    model.save_pretrained(str(out), safe_serialization=True)
    return {"output_dir": str(out), "steps": step, "losses": losses}


def main(argv=None) -> int:
    from fusionaudio.commands import function_main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return function_main(train, "python -m fusionaudio.audsem.train", argv)


if __name__ == "__main__":
    raise SystemExit(main())
