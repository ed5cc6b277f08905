"""AudSemThinker LoRA adapters (peft directories), loaded strictly.

Adapters saved with transformers 4.x name the thinker's modules ``model.layers.*`` /
``audio_tower.*`` / ``visual.*``; transformers 5.x nests them as ``model.language_model.*`` /
``model.audio_tower.*`` / ``model.visual.*``. peft maps only part of that itself and silently drops
the rest (all the audio-encoder LoRA), so the names are mapped here (rules as data) and every
adapter tensor must land on a LoRA parameter, and every LoRA parameter must get one.
"""

from __future__ import annotations

import re
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")

#: transformers-4.x thinker key names -> 5.x (after peft's ``base_model.model.`` prefix).
THINKER_4X_TO_5X: list[tuple[str, str]] = [
    (r"^thinker\.", ""),  # adapters trained on the full Omni model
    (r"^model\.(?!(language_model|visual|audio_tower)\.)", "model.language_model."),
    (r"^(audio_tower|visual)\.", r"model.\1."),
]
_RULES = [(re.compile(p), r) for p, r in THINKER_4X_TO_5X]
_PREFIX = "base_model.model."


def to_current_name(name: str) -> str:
    """A peft adapter key in transformers-4.x naming mapped to 5.x (5.x names are unchanged)."""
    if not name.startswith(_PREFIX):
        return name
    rest = name[len(_PREFIX):]
    for pattern, repl in _RULES:
        rest = pattern.sub(repl, rest, count=1)
    return _PREFIX + rest


def _read_weights(path: Path) -> dict:
    from fusionaudio.model.checkpoints import load_state_file

    for name in ADAPTER_FILES:
        if (path / name).is_file():
            return load_state_file(path / name)
    raise FileNotFoundError(f"{path}: no adapter weights ({' or '.join(ADAPTER_FILES)})")


def apply_adapter(model, model_path):
    """Wrap ``model`` with the peft LoRA adapter in ``model_path``; an error lists any adapter tensor
    that matches no LoRA parameter, any LoRA parameter the adapter lacks, and shape mismatches."""
    from peft import LoraConfig, PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from fusionaudio.model.checkpoints import listing, read_json_file
    from fusionaudio.tokenizer import TokenizerError, refuse_remote_code

    path = Path(model_path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(
            f"{path}: not a peft LoRA adapter directory (no adapter_config.json); pass a full fine-tuned "
            "checkpoint as base_model_path instead"
        )
    raw_config = read_json_file(path / ADAPTER_CONFIG, "adapter config")
    try:
        refuse_remote_code(raw_config, path / ADAPTER_CONFIG)
    except TokenizerError as exc:
        raise ValueError(str(exc)) from None
    config = LoraConfig.from_pretrained(str(path))
    config.inference_mode = True
    state = {to_current_name(k): v for k, v in _read_weights(path).items()}
    peft_model = PeftModel(model, config)
    expected = {k: v.shape for k, v in get_peft_model_state_dict(peft_model).items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k])}"
             for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k])]
    problems = [f"{len(v)} {label}: {listing(v)}" for label, v in (
        ("adapter tensor(s) matching no LoRA parameter", unexpected),
        ("LoRA parameter(s) missing from the adapter", missing), ("shape mismatch(es)", wrong)) if v]
    if problems:
        raise ValueError(f"{path}: adapter does not fit the model; " + "; ".join(problems))
    set_peft_model_state_dict(peft_model, state)
    peft_model.requires_grad_(False)
    return peft_model.eval()


def export_merged(base_model_path, model_path, output_dir, dtype=None, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """AudSemThinker merged export: the adapter folded into the thinker (peft's ``merge_and_unload``),
    written in the released key layout (``thinker.*`` safetensors shards + index) beside the base's
    config, tokenizer, feature-extractor and chat-template files; loads with ``load_thinker``."""
    import json
    import shutil

    from safetensors.torch import save_file

    from fusionaudio.audsem.model import load_thinker
    from fusionaudio.audsem.released import released_name
    from fusionaudio.model.loading import resolve_dtype

    base, out = Path(base_model_path), Path(output_dir)
    model = load_thinker(base)
    if model_path is not None:
        model = apply_adapter(model, model_path).merge_and_unload()
    dtype = resolve_dtype(dtype) if dtype is not None else None
    state = {released_name(k): (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    names, shards, size = sorted(state), [[]], 0
    for name in names:
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k] for k in keys}, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    for f in base.iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja", ".txt", ".model") and "safetensors" not in f.name:
            shutil.copyfile(f, out / f.name)
    return out
