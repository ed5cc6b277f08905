"""Loading: reference-format base directories and fine-tuned checkpoints, this project's
own safetensors layout, and the ``convert`` command.

Every key is accounted for: a missing, unexpected or mis-shaped tensor is an error that
lists them; known-unused reference tensors are summarised in one log line. Pickled files
are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from fusionaudio.gama.tokenizer import check_vocab_size, load_tokenizer  # noqa: F401 - load_tokenizer is re-exported
from fusionaudio.gama.checkpoints import ADAPTER_CONFIG, CHECKPOINT_FILES, LOCAL_CONFIG, CheckpointError, base_weight_files, check_lora_weights, config_from_file, effective_lora, raise_on_bad_values, raise_problems, read_adapter_config, read_config
from fusionaudio.gama.checkpoints import TRAINING_ARGS, is_training_output, recorded_base_dir
from fusionaudio.loading.device import resolve_device
from fusionaudio.loading.files import listing
from fusionaudio.loading.quantize import (check_quantize, pack_for_cpu_inference, quantized_weight_shapes,
                                         refuse_quantized_keys, release_file_pages)
from fusionaudio.loading.weights import load_state_file, resolve_dtype, state_keys
from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.modeling import GamaForCausalLM
from fusionaudio.gama.sizes import check_sizes
from fusionaudio.gama.keymap import UnmappedKeyError, known_unused_group, reference_to_local

log = logging.getLogger("fusionaudio.load")

LOCAL_WEIGHTS = "model.safetensors"
_LOCAL_PREFIXES = ("llm.", "audio_encoder.", "qformer.", "query_tokens", "qformer_proj_norm.", "audio_")


# -- key mapping ------------------------------------------------------------------------
def _is_local_layout(keys) -> bool:
    return all(k.startswith(_LOCAL_PREFIXES) for k in keys)


def map_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], unused: Counter,
              origin: dict | None = None):
    """Rename ``state`` to the model's names. Returns (mapped, unexpected, wrong_shape);
    ``origin`` (if given) receives model name -> the file's name."""
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
            if origin is not None:
                origin[target] = name
    return mapped, unexpected, wrong_shape


def _raise_if_bad(source, missing=(), unexpected=(), wrong_shape=()):
    raise_problems(source, [("missing key(s)", missing), ("unexpected key(s)", unexpected),
                            ("shape mismatch(es)", wrong_shape)])


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
    return config_from_file(candidate, reference=False) if candidate.is_file() else None


def checkpoint_file(path: Path) -> Path:
    """The weights file of a fine-tuned checkpoint (a file, or a directory holding one)."""
    if not path.is_dir():
        return path
    found = [path / n for n in CHECKPOINT_FILES if (path / n).is_file() or (path / n).is_symlink()]
    if not found:
        raise CheckpointError(f"{path}: no checkpoint file ({', '.join(CHECKPOINT_FILES)})")
    return found[0]


def finetuned_overrides(path: Path) -> dict:
    """Config sections the checkpoint at ``path`` sets: a peft ``adapter_config.json`` gives the LoRA
    settings; a ``fusionaudio_config.json`` beside it (training output) gives LoRA and aggregator."""
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
        return {"lora": read_adapter_config(path)}
    ft = finetuned_config(path)
    return {name: getattr(ft, name) for name in FINETUNE_SECTIONS} if ft else {}


def load_base(directory: str | Path, device="cpu", dtype=torch.float32, lora: bool = True,
              overrides: dict | None = None, check_values: bool = True, quantize: str | None = None) -> GamaForCausalLM:
    """Build the model from a base directory (reference or local layout), strictly.

    ``overrides`` replaces config sections (``lora``, ``aggregator``) with those a fine-tuned
    checkpoint was trained with. The model's ``loaded_from_base`` attribute lists the parameters
    the directory provided (a reference base has no LoRA tensors). ``quantize`` (``int8``, ``nf4``):
    the Llama's linear layers are quantized as they are read (:mod:`fusionaudio.gama.quantize`)."""
    quant = None
    if check_quantize(quantize):
        from fusionaudio.gama.quantize import LlmQuantizer

        quant = LlmQuantizer(quantize, device, dtype)
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"base model directory not found: {directory}")
    config, layout = read_config(directory)
    for name, value in (overrides or {}).items():
        if name not in FINETUNE_SECTIONS:
            raise ValueError(f"cannot override config section {name!r}; only {FINETUNE_SECTIONS}")
        setattr(config, name, value)
    config.lora = effective_lora(config.lora)
    files = [directory / LOCAL_WEIGHTS] if layout == "local" else base_weight_files(directory)
    check_sizes(config, files, layout, directory)  # before building: a config's sizes must fit its weights
    with torch.device("meta"):
        model = GamaForCausalLM(config)
    if layout == "local" and config.lora is not None and lora:
        with torch.device("meta"):
            model.enable_lora(config.lora)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if quant is not None and model.lora_enabled:
        with torch.device("meta"):  # LoRA goes on over the quantized layers (LlmQuantizer.add_lora)
            model = GamaForCausalLM(config)
    state, unused, unexpected, wrong = {}, Counter(), [], []
    for path in files:
        origin = {}
        mapped, bad, shapes = map_state(load_state_file(path), expected, unused, origin)
        if check_values:  # a weight to quantize is checked alone, just before (a whole shard stays unread)
            raise_on_bad_values(path, {origin[k]: v for k, v in mapped.items() if not (quant and quant.takes(k))})
        unexpected += [f"{n} (in {path.name})" for n in bad]
        wrong += shapes
        for k, v in mapped.items():
            if quant is not None and quant.takes(k):
                if check_values:
                    raise_on_bad_values(path, {origin[k]: v})
                quant.add(k, v, path)
            else:
                state[k] = v.to(device=device, dtype=dtype)
    _raise_if_bad(directory, set(expected) - set(state) - (quant.keys if quant else set()), unexpected, wrong)
    _log_unused(directory, unused)
    if quant is None:
        model.load_state_dict(state, strict=True, assign=True)
    else:
        quant.install(model, state)
    _rebuild_rotary(model, device)
    if quant is not None and config.lora is not None and lora:
        quant.add_lora(model, config.lora, state)
    elif layout == "reference" and config.lora is not None and lora:
        model.enable_lora(config.lora)
        model.to(device=device, dtype=dtype)
    # strict above: every non-LoRA parameter came from the directory (LoRA only in our layout)
    model.loaded_from_base = frozenset(n for n, _ in model.named_parameters() if ".lora_" not in n or n in state)
    return model


def load_finetuned(model: GamaForCausalLM, path: str | Path, check_values: bool = True) -> list[str]:
    """Load a fine-tuned checkpoint on top of ``model``; returns the keys it set.

    Strict on the union of base and checkpoint: every parameter comes from the base directory
    (``model.loaded_from_base``) or the checkpoint (which wins); LoRA comes all from the checkpoint
    or not at all (then the model keeps its own, e.g. freshly initialised for training)."""
    path = Path(path)
    overrides = finetuned_overrides(path)
    path = checkpoint_file(path)
    params = dict(model.named_parameters())
    expected = {k: v.shape for k, v in params.items()} | quantized_weight_shapes(model)
    raw = load_state_file(path)
    if "lora" in overrides:
        check_lora_weights(path, raw, overrides["lora"])
    unused = Counter()
    origin = {}
    mapped, unexpected, wrong = map_state(raw, expected, unused, origin)
    refuse_quantized_keys(path, mapped, model)
    if check_values:  # tensor by tensor, each one's file pages handed back: the file is never all in memory
        raise_on_bad_values(path, {origin[k]: v for k, v in mapped.items()}, mapped_from=path)
    lora_keys = {k for k in expected if ".lora_" in k}
    base_names = getattr(model, "loaded_from_base", None)
    if base_names is None:
        from_base = {k for k in expected if k not in lora_keys}
    else:  # LoRA injected after loading renames q_proj.weight to q_proj.base_layer.weight
        plain = {n.replace(".base_layer.", ".") for n in base_names}
        from_base = {k for k in expected if k.replace(".base_layer.", ".") in plain}
    required = (set(expected) - set(from_base)) - (set() if lora_keys & set(mapped) else lora_keys)
    _raise_if_bad(path, required - set(mapped), unexpected, wrong)
    _log_unused(path, unused)
    with torch.no_grad():
        for k, v in mapped.items():
            params[k].copy_(v.to(params[k].dtype))
            release_file_pages(v, path)
    return sorted(mapped)


def _lora_for(base_dir: Path, model_path: Path, overrides: dict) -> dict:
    """Decide the LoRA the model is built with for ``model_path`` on ``base_dir``: the checkpoint's
    config if it has one; else the base config's when the checkpoint holds LoRA tensors or the base
    directory does (our layout); else none (a checkpoint without LoRA, e.g. GAMA's stage 1)."""
    if "lora" in overrides:
        return overrides
    raw_keys = state_keys(checkpoint_file(model_path))
    if any(".lora_" in k for k in raw_keys):
        return overrides
    config, layout = read_config(base_dir)
    if layout == "local" and effective_lora(config.lora) is not None:
        return overrides
    log.info("%s: no LoRA tensors; the model runs without LoRA", model_path)
    return {**overrides, "lora": None}


def resolve_model_paths(base_model_path, model_path) -> tuple[Path, Path | None]:
    """(base directory, checkpoint): a fine-tuned checkpoint alone (as ``model_path``, or given as the base)
    loads on the base directory its ``training_args.json`` records."""
    if base_model_path is not None and model_path is None and is_training_output(base_model_path):
        base_model_path, model_path = None, base_model_path
    if base_model_path is None:
        if model_path is None:
            raise CheckpointError("no model given: pass a base model directory (base_model_path), or a fine-tuned "
                                  "checkpoint whose training_args.json records its base")
        base_model_path = recorded_base_dir(model_path)
        log.info("%s: base directory %s (from its %s)", model_path, base_model_path, TRAINING_ARGS)
    return Path(base_model_path), None if model_path is None else Path(model_path)


def load_model(base_model_path, model_path=None, device="cpu", dtype=torch.float32, check_values: bool = True,
               quantize: str | None = None):
    """Load ``(model, tokenizer)``: a base directory, optionally a fine-tuned checkpoint on top.

    ``base_model_path``: a reference "Llama-2-7b-chat-hf-qformer" directory (config.json +
    sharded .bin or safetensors + tokenizer) or a directory written by ``fusionaudio
    convert`` / ``export`` / training. ``model_path``: a ``.pth``/``.bin``/``.safetensors`` state
    dict in the reference's peft layout or this project's names, LoRA-only or not, with or
    without LoRA, a peft adapter directory or a training output directory.
    ``check_values=False`` skips the NaN/inf and dtype check of the tensors. Without ``base_model_path``
    (or with a training output folder as it), the base is the one the checkpoint's ``training_args.json``
    records. ``device="cuda"`` without CUDA falls back to the CPU with a warning. ``quantize``: ``"int8"``
    or ``"nf4"`` holds the Llama's linear layers in 8 / 4 bits (bitsandbytes), quantized as they are read;
    the audio side stays in ``dtype``; LoRA stays unmerged, in ``dtype``.
    """
    dtype = resolve_dtype(dtype)
    base_model_path, model_path = resolve_model_paths(base_model_path, model_path)
    device, note = resolve_device(device)
    if note:
        log.warning(note)
    if not Path(base_model_path).is_dir():
        raise CheckpointError(f"base model directory not found: {base_model_path}")
    tokenizer = load_tokenizer(base_model_path)  # first: a bad tokenizer directory fails before the weights load
    overrides = None
    if model_path is not None:
        model_path = Path(model_path)
        overrides = _lora_for(Path(base_model_path), model_path, finetuned_overrides(model_path))
    model = load_base(base_model_path, device=device, dtype=dtype, overrides=overrides, check_values=check_values,
                      quantize=quantize)
    if model_path is not None:
        load_finetuned(model, model_path, check_values=check_values)
    model.eval()
    if check_quantize(quantize):
        pack_for_cpu_inference(model)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise CheckpointError(f"{base_model_path}: tensors left uninitialised: {listing(leftovers)}")
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
