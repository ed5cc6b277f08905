"""Loading: reference-format base directories and fine-tuned checkpoints, this project's
own safetensors layout, and the ``convert`` command.

Every key is accounted for: a missing, unexpected or mis-shaped tensor is an error that
lists them; known-unused reference tensors are summarised in one log line. Pickled files
are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch

from ..tokenizer import check_vocab_size, load_tokenizer  # noqa: F401 - load_tokenizer is re-exported
from .config import GamaConfig
from .gama import GamaForCausalLM
from .keymap import (
    REFERENCE_TRAINED_SUBSTRINGS,
    UnmappedKeyError,
    known_unused_group,
    local_to_reference,
    reference_to_local,
)

log = logging.getLogger("fusionaudio.load")

LOCAL_CONFIG = "fusionaudio_config.json"
LOCAL_WEIGHTS = "model.safetensors"
_LOCAL_PREFIXES = ("llm.", "audio_encoder.", "qformer.", "query_tokens", "qformer_proj_norm.", "audio_")


class CheckpointError(ValueError):
    """A checkpoint that does not match the model: names the file and the keys."""


def _listing(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


# -- files ---------------------------------------------------------------------------
def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a pickled ``.bin/.pth/.pt`` state dict (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in (".bin", ".pth", ".pt"):
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # files in the legacy (non-zip) format cannot be mapped
                if "mmap" not in str(exc):
                    raise
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{path}: unsupported checkpoint type {path.suffix!r} (.safetensors, .bin, .pth, .pt)")
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return state


def base_weight_files(directory: Path) -> list[Path]:
    """The weight files of a base directory: safetensors first, then ``.bin`` shards."""
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [directory / f for f in files]
        if (directory / single).is_file():
            return [directory / single]
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise CheckpointError(f"{directory}: no model weights (model*.safetensors or pytorch_model*.bin)")


def read_config(directory: Path) -> tuple[GamaConfig, str]:
    """(config, layout) of a model directory; layout is "local" or "reference"."""
    if (directory / LOCAL_CONFIG).is_file():
        return GamaConfig.load(directory / LOCAL_CONFIG), "local"
    cfg = directory / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json or {LOCAL_CONFIG})")
    return GamaConfig.from_llama_config(json.loads(cfg.read_text())), "reference"


# -- key mapping ------------------------------------------------------------------------
def _is_local_layout(keys) -> bool:
    return all(k.startswith(_LOCAL_PREFIXES) for k in keys)


def map_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], unused: Counter):
    """Rename ``state`` to the model's names. Returns (mapped, unexpected, wrong_shape)."""
    local = _is_local_layout(state)
    mapped, unexpected, wrong_shape = {}, [], []
    for name, tensor in state.items():
        if local:
            target = name
        else:
            try:
                target = reference_to_local(name)
            except UnmappedKeyError:
                unexpected.append(name)
                continue
            if target is None:
                unused[known_unused_group(name)] += 1
                continue
            if target not in expected and target.endswith(".weight"):
                wrapped = target[: -len("weight")] + "base_layer.weight"  # a LoRA-wrapped Linear
                target = wrapped if wrapped in expected else target
        if target not in expected:
            unexpected.append(name)
        elif tuple(expected[target]) != tuple(tensor.shape):
            wrong_shape.append(f"{name} {tuple(tensor.shape)} vs model {tuple(expected[target])}")
        else:
            mapped[target] = tensor
    return mapped, unexpected, wrong_shape


def _raise_if_bad(source, missing=(), unexpected=(), wrong_shape=()):
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_listing(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def _log_unused(source, unused: Counter):
    if unused:
        parts = ", ".join(f"{n} {label}" for label, n in sorted(unused.items()))
        log.info("%s: ignored %d known-unused reference tensors (%s)", source, sum(unused.values()), parts)


# -- model assembly ------------------------------------------------------------------------
def _rebuild_rotary(model: GamaForCausalLM, device) -> None:
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device(device):
        model.llm.model.rotary_emb = LlamaRotaryEmbedding(config=model.llm.config)


#: Config sections a fine-tuned checkpoint may set differently from its base directory.
FINETUNE_SECTIONS = ("lora", "aggregator")


def finetuned_config(path: str | Path) -> GamaConfig | None:
    """The config saved beside a fine-tuned checkpoint by training (None for reference files)."""
    path = Path(path)
    candidate = (path if path.is_dir() else path.parent) / LOCAL_CONFIG
    return GamaConfig.load(candidate) if candidate.is_file() else None


def load_base(directory: str | Path, device="cpu", dtype=torch.float32, lora: bool = True,
              overrides: dict | None = None) -> GamaForCausalLM:
    """Build the model from a base directory (reference or local layout), strictly.

    ``overrides`` replaces config sections (``lora``, ``aggregator``) with those a fine-tuned
    checkpoint was trained with."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"base model directory not found: {directory}")
    config, layout = read_config(directory)
    for name, value in (overrides or {}).items():
        if name not in FINETUNE_SECTIONS:
            raise ValueError(f"cannot override config section {name!r}; only {FINETUNE_SECTIONS}")
        setattr(config, name, value)
    with torch.device("meta"):
        model = GamaForCausalLM(config)
    if layout == "local" and config.lora is not None and lora:
        with torch.device("meta"):
            model.enable_lora(config.lora)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    files = [directory / LOCAL_WEIGHTS] if layout == "local" else base_weight_files(directory)
    state, unused, unexpected, wrong = {}, Counter(), [], []
    for path in files:
        mapped, bad, shapes = map_state(load_state_file(path), expected, unused)
        unexpected += [f"{n} (in {path.name})" for n in bad]
        wrong += shapes
        for k, v in mapped.items():
            state[k] = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
    _raise_if_bad(directory, set(expected) - set(state), unexpected, wrong)
    _log_unused(directory, unused)
    model.load_state_dict(state, strict=True, assign=True)
    _rebuild_rotary(model, device)
    if layout == "reference" and config.lora is not None and lora:
        model.enable_lora(config.lora)
        model.to(device=device, dtype=dtype)
    return model


def load_finetuned(model: GamaForCausalLM, path: str | Path) -> list[str]:
    """Load a fine-tuned checkpoint on top of ``model``; returns the keys it set.

    Reference-format files must hold every LoRA and audio-side tensor (what the
    reference's Trainer saves); this project's files must hold every LoRA tensor."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / n for n in ("adapter_model.safetensors", "model.safetensors", "pytorch_model.bin", "adapter_model.bin")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CheckpointError(f"{path}: no checkpoint file (adapter_model.safetensors, model.safetensors, pytorch_model.bin)")
        path = found[0]
    params = dict(model.named_parameters())
    expected = {k: v.shape for k, v in params.items()}
    raw = load_state_file(path)
    unused = Counter()
    mapped, unexpected, wrong = map_state(raw, expected, unused)
    lora_keys = {k for k in expected if ".lora_" in k}
    if _is_local_layout(raw):
        required = lora_keys
    else:
        required = {k for k in expected if any(s in local_to_reference(k) for s in REFERENCE_TRAINED_SUBSTRINGS)}
    _raise_if_bad(path, required - set(mapped), unexpected, wrong)
    _log_unused(path, unused)
    with torch.no_grad():
        for k, v in mapped.items():
            params[k].copy_(v.to(params[k].dtype))
    return sorted(mapped)


def load_model(base_model_path, model_path=None, device="cpu", dtype=torch.float32):
    """Load ``(model, tokenizer)``: a base directory, optionally a fine-tuned checkpoint on top.

    ``base_model_path``: a reference "Llama-2-7b-chat-hf-qformer" directory (config.json +
    sharded .bin or safetensors + tokenizer) or a directory written by ``fusionaudio
    convert`` / training. ``model_path``: a ``.pth``/``.bin``/``.safetensors`` state dict in
    the reference's peft layout or this project's names (or a directory holding one).
    """
    dtype = resolve_dtype(dtype)
    device = torch.device(device)
    ft = finetuned_config(model_path) if model_path is not None else None
    overrides = {name: getattr(ft, name) for name in FINETUNE_SECTIONS} if ft else None
    model = load_base(base_model_path, device=device, dtype=dtype, overrides=overrides)
    if model_path is not None:
        load_finetuned(model, model_path)
    model.eval()
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise CheckpointError(f"{base_model_path}: tensors left uninitialised: {_listing(leftovers)}")
    tokenizer = load_tokenizer(base_model_path)
    check_vocab_size(tokenizer, model.llm.get_input_embeddings().weight.shape[0], base_model_path)
    return model, tokenizer


def save_local(model: GamaForCausalLM, tokenizer, output_dir: str | Path, dtype=None) -> Path:
    """Write this project's layout: model.safetensors (our names) + config + tokenizer."""
    from safetensors.torch import save_file

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype(dtype) if dtype is not None else None
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / LOCAL_WEIGHTS), metadata={"format": "pt", "layout": "fusionaudio"})
    model.config.save(out / LOCAL_CONFIG)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def convert(base_model: str, output: str, model_path: str | None = None, dtype: str | None = None) -> str:
    """``fusionaudio convert``: rewrite a reference base (+ fine-tuned checkpoint) into this
    project's safetensors layout, which loads without key mapping."""
    model, tok = load_model(base_model, model_path, device="cpu", dtype=resolve_dtype(dtype or "float32"))
    return str(save_local(model, tok, output))
