"""AudSemThinker LoRA adapters (peft directories), loaded strictly.

Adapters saved with transformers 4.x name the thinker's modules ``model.layers.*`` /
``audio_tower.*`` / ``visual.*``; transformers 5.x nests them as ``model.language_model.*`` /
``model.audio_tower.*`` / ``model.visual.*``. peft maps only part of that itself and silently drops
the rest (all the audio-encoder LoRA), so the names are mapped here (rules as data) and every
adapter tensor must land on a LoRA parameter, and every LoRA parameter must get one.
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.audsem.keymap import to_current_name

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")

def _read_weights(path: Path) -> dict:
    from fusionaudio.loading.weights import load_state_file

    for name in ADAPTER_FILES:
        if (path / name).is_file():
            return load_state_file(path / name)
    raise FileNotFoundError(f"{path}: no adapter weights ({' or '.join(ADAPTER_FILES)})")


def apply_adapter(model, model_path):
    """Wrap ``model`` with the peft LoRA adapter in ``model_path``; an error lists any adapter tensor
    that matches no LoRA parameter, any LoRA parameter the adapter lacks, and shape mismatches."""
    from peft import LoraConfig, PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from fusionaudio.loading.files import listing, read_json_file
    from fusionaudio.errors import CheckpointError
    from fusionaudio.loading.files import refuse_remote_code

    path = Path(model_path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(
            f"{path}: not a peft LoRA adapter directory (no adapter_config.json); pass a full fine-tuned "
            "checkpoint as base_model_path instead"
        )
    raw_config = read_json_file(path / ADAPTER_CONFIG, "adapter config")
    try:
        refuse_remote_code(raw_config, path / ADAPTER_CONFIG)
    except CheckpointError as exc:
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


