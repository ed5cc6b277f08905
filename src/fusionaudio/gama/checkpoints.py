"""Checkpoint files: reading them safely, and checking what they hold before it is loaded.

* weights: ``.safetensors`` or pickles read with ``torch.load(weights_only=True)`` only;
* configs: ``config.json`` / ``fusionaudio_config.json`` / ``adapter_config.json``, each error naming
  the file and the problem (malformed JSON, a wrong type, a zero-byte file, a symlink loop);
* values: a non-finite or wrongly typed tensor is an error naming the tensors (on by default);
* peft adapter directories: ``adapter_config.json`` read into :class:`LoraSettings` and checked against
  the weights (rank, target modules).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import listing, read_json_file
from fusionaudio.loading.quantize import release_file_pages
from fusionaudio.loading.weights import index_files
from fusionaudio.gama.config import GamaConfig, LoraSettings

LOCAL_CONFIG = "fusionaudio_config.json"
ADAPTER_CONFIG = "adapter_config.json"
#: Files a checkpoint directory may hold its weights in, in order of preference.
CHECKPOINT_FILES = ("adapter_model.safetensors", "model.safetensors", "pytorch_model.bin", "adapter_model.bin")
#: LoRA target lists that mean "no LoRA" (GAMA's stage-1 recipe passes ``['dummy']``).
NO_LORA_TARGETS = ({"dummy"},)


def base_weight_files(directory: Path) -> list[Path]:
    """The weight files of a base directory: safetensors first, then ``.bin`` shards."""
    for index_name, single, pattern in (
        ("model.safetensors.index.json", "model.safetensors", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = directory / index_name
        if index.is_file() or index.is_symlink():
            return index_files(index)  # each name checked to stay inside the directory
        if (directory / single).is_file():
            return [directory / single]
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise CheckpointError(f"{directory}: no model weights (model*.safetensors or pytorch_model*.bin)")


_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list[str]": (list,)}
#: Llama fields that must be positive integers / numbers.
_LLM_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
             "num_key_value_heads", "max_position_embeddings")
_LLM_FLOATS = ("rms_norm_eps", "rope_theta", "initializer_range")
#: Integer fields of the audio / Q-Former / aggregator / LoRA sections that may be 0 (the others must be >= 1).
_MAY_BE_ZERO = ("tap_j", "tap_k", "unified_depth")


def _wrong(value, kinds) -> bool:
    return not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)


def config_type_problems(data: dict, reference: bool) -> list[str]:
    """Fields of a config whose JSON type is wrong (``"hidden_size": "big"``, ``"lora": 5``, ...)."""
    from dataclasses import fields

    from fusionaudio.gama.config import AggregatorConfig, AudioEncoderConfig, QFormerConfig

    llm = data if reference else data.get("llm")
    sections = (data.get("fusionaudio") or {}) if reference else data
    problems = []
    if not isinstance(llm, dict):
        return [f"'llm' must be an object, got {llm!r}"]
    if not isinstance(sections, dict):
        return [f"'fusionaudio' must be an object, got {sections!r}"]
    for key in _LLM_INTS:
        if key in llm and (_wrong(llm[key], (int,)) or llm[key] <= 0):
            problems.append(f"{'' if reference else 'llm.'}{key} must be a positive integer, got {llm[key]!r}")
    for key in _LLM_FLOATS:
        if key in llm and _wrong(llm[key], (int, float)):
            problems.append(f"{'' if reference else 'llm.'}{key} must be a number, got {llm[key]!r}")
    for name, cls in (("audio", AudioEncoderConfig), ("qformer", QFormerConfig), ("aggregator", AggregatorConfig),
                      ("lora", LoraSettings)):
        values = sections.get(name)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{name} must be an object{' or null' if name == 'lora' else ''}, got {values!r}")
            continue
        for f in fields(cls):
            if f.name not in values:
                continue
            value, kind = values[f.name], str(f.type).replace(" | None", "")
            if value is None and "None" in str(f.type):
                continue
            if kind in _FIELD_TYPES and _wrong(value, _FIELD_TYPES[kind]):
                problems.append(f"{name}.{f.name} must be {kind}, got {value!r}")
            elif kind == "int" and value < (0 if f.name in _MAY_BE_ZERO else 1):
                problems.append(f"{name}.{f.name} must be {'>= 0' if f.name in _MAY_BE_ZERO else 'positive'}, "
                                f"got {value!r}")
    return problems


def config_from_file(path: Path, reference: bool) -> GamaConfig:
    """A model config from ``config.json`` (reference) or ``fusionaudio_config.json`` (ours)."""
    data = read_json_file(path)
    if reference and data.get("auto_map"):
        raise CheckpointError(f"{path}: has an 'auto_map' entry (custom Python code); this project never runs "
                              "code from a model directory (trust_remote_code=False)")
    problems = config_type_problems(data, reference)
    if problems:
        raise CheckpointError(f"{path}: invalid model config: " + "; ".join(problems))
    try:
        return GamaConfig.from_llama_config(data) if reference else GamaConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {type(exc).__name__}: {exc}") from exc


def read_config(directory: Path) -> tuple[GamaConfig, str]:
    """(config, layout) of a model directory; layout is "local" or "reference"."""
    local = directory / LOCAL_CONFIG
    if local.is_file() or local.is_symlink():
        return config_from_file(local, reference=False), "local"
    cfg = directory / "config.json"
    if not (cfg.is_file() or cfg.is_symlink()):
        raise CheckpointError(f"{directory}: not a model directory (no config.json or {LOCAL_CONFIG})")
    return config_from_file(cfg, reference=True), "reference"


# -- values -------------------------------------------------------------------------------
def bad_values(state: dict[str, torch.Tensor], names=None, mapped_from=None) -> tuple[list[str], list[str]]:
    """(non-finite, wrongly typed) tensor names among ``names`` (default: all) of ``state``. ``mapped_from``:
    the weight file ``state`` is memory-mapped from; each tensor's pages are handed back once checked."""
    nonfinite, wrong_type = [], []
    for name in names if names is not None else state:
        t = state[name]
        if not (t.is_floating_point() or t.is_complex()):
            wrong_type.append(f"{name} ({str(t.dtype).replace('torch.', '')}, expected a floating-point tensor)")
        elif t.numel() and not bool(torch.isfinite(t).all()):
            nonfinite.append(name)
        if mapped_from is not None:
            release_file_pages(t, mapped_from)
    return nonfinite, wrong_type


def raise_problems(source, groups, suffix: str = "") -> None:
    """One :class:`CheckpointError` for ``source`` listing every non-empty ``(what, names)`` group,
    e.g. ``"3 missing key(s): a, b, c"``; nothing when all groups are empty."""
    problems = [f"{len(names)} {what}: {listing(names)}" for what, names in groups if names]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems) + suffix)


def raise_on_bad_values(source, state: dict[str, torch.Tensor], names=None, mapped_from=None) -> None:
    """Error naming the tensors with NaN/inf values or a non-float dtype (``check_values=False`` skips);
    ``mapped_from``: see :func:`bad_values`."""
    nonfinite, wrong_type = bad_values(state, names, mapped_from)
    raise_problems(source, [("tensor(s) with NaN/inf values", nonfinite), ("tensor(s) of the wrong type", wrong_type)],
                   " (check_values=False loads it anyway)")


# -- LoRA ---------------------------------------------------------------------------------
def effective_lora(settings: LoraSettings | None) -> LoraSettings | None:
    """``None`` for "no LoRA": no settings, or GAMA stage 1's ``target_modules=['dummy']``."""
    if settings is None or set(settings.target_modules) in NO_LORA_TARGETS or not settings.target_modules:
        return None
    return settings


def read_adapter_config(directory: Path) -> LoraSettings | None:
    """LoRA settings of a peft adapter directory (``adapter_config.json``), refusing what the model
    cannot reproduce (DoRA, rsLoRA, per-module ranks, biases, modules_to_save, another peft type)."""
    path = directory / ADAPTER_CONFIG
    cfg = read_json_file(path, "adapter config")
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {cfg.get('peft_type')!r} is not LORA")
    for flag in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if cfg.get(flag):
            problems.append(f"{flag}=true is not supported")
    for field in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        if cfg.get(field):
            problems.append(f"{field}={cfg[field]!r} is not supported")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg['bias']!r} is not supported (only 'none')")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        problems.append(f"target_modules as a regex ({targets!r}) is not supported; list the module names")
    elif not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        problems.append(f"target_modules must be a list of module names, got {targets!r}")
    for field, kind in (("r", int), ("lora_alpha", (int, float)), ("lora_dropout", (int, float))):
        if field in cfg and (not isinstance(cfg[field], kind) or isinstance(cfg[field], bool)):
            problems.append(f"{field} must be a number, got {cfg[field]!r}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    settings = LoraSettings(r=int(cfg.get("r", 8)), alpha=cfg.get("lora_alpha", 8),
                            dropout=float(cfg.get("lora_dropout", 0.0)), target_modules=sorted(targets))
    return effective_lora(settings)


_LORA_KEY = re.compile(r"\.([A-Za-z0-9_]+)\.lora_([AB])\.(?:default\.)?weight$")


def check_lora_weights(source, state: dict[str, torch.Tensor], settings: LoraSettings | None) -> None:
    """The LoRA tensors of a checkpoint must fit ``settings`` (rank and target modules)."""
    found = {}
    for name, t in state.items():
        m = _LORA_KEY.search(name)
        if m:
            found.setdefault(m.group(1), set()).add(t.shape[0] if m.group(2) == "A" else t.shape[-1])
    if not found:
        return
    if settings is None:
        raise CheckpointError(f"{source}: holds LoRA tensors for {sorted(found)} but its config says no LoRA")
    problems = []
    if set(found) != set(settings.target_modules):
        problems.append(f"LoRA tensors target {sorted(found)} but the config says target_modules="
                        f"{sorted(settings.target_modules)}")
    ranks = set().union(*found.values())
    if ranks != {settings.r}:
        problems.append(f"LoRA tensors have rank {sorted(ranks)} but the config says r={settings.r}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


# -- a fine-tuned checkpoint's own base directory -----------------------------------------
#: written by training beside its checkpoints: the run's options and ``base_dir``, the base it started from
TRAINING_ARGS = "training_args.json"


def is_training_output(directory) -> bool:
    """A folder written by training (``runs/ft`` or ``runs/ft/checkpoint-N``), not a base directory."""
    d = Path(directory)
    return d.is_dir() and (d / TRAINING_ARGS).is_file() and not (d / "config.json").is_file() \
        and not (d / "model.safetensors").is_file()


def recorded_base_dir(checkpoint, flag: str = "--base_model") -> Path:
    """The base directory a fine-tuned checkpoint was trained from, as its ``training_args.json`` records
    it; a clear error (naming ``flag``) when there is none or it is not there any more."""
    path = Path(checkpoint).expanduser()
    args_file = (path if path.is_dir() else path.parent) / TRAINING_ARGS
    if not args_file.is_file():
        raise CheckpointError(f"{path}: no base directory given, and no {TRAINING_ARGS} beside the checkpoint "
                              f"records one; pass {flag} DIR (the directory it was fine-tuned from)")
    base = read_json_file(args_file, "training options").get("base_dir")
    if not isinstance(base, str) or not base:
        raise CheckpointError(f"{args_file}: records no base_dir; pass {flag} DIR")
    base_dir = Path(base).expanduser()
    if not base_dir.is_dir():
        raise CheckpointError(f"{path} was fine-tuned from {base_dir} (recorded in {args_file}), which is not "
                              f"there any more; pass {flag} DIR")
    return base_dir
