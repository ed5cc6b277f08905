"""Load the Qwen2.5-Omni thinker strictly from a full-Omni or thinker-only directory (no remote code)."""

from __future__ import annotations

from pathlib import Path

import torch

from fusionaudio.audsem.sizes import check_thinker_sizes
from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import read_json_object, refuse_remote_code
from fusionaudio.loading.quantize import check_quantize, release_free_memory, transformers_config
from fusionaudio.loading.weights import resolve_dtype

OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
_SKIPPED_PREFIXES = ("talker.", "token2wav.")
#: What ``quantize`` leaves in the compute dtype: all but the language model (module names of transformers 5
#: and 4, matched from the start of a name or as its end).
UNQUANTIZED = ("model.audio_tower", "model.visual", "audio_tower", "visual", "lm_head")


def _read_config(path) -> dict:

    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: no config.json (expected a model directory)")
    try:
        config = read_json_object(cfg_file)
        refuse_remote_code(config, cfg_file)
    except CheckpointError as exc:  # same message, this module's error type
        raise ValueError(str(exc)) from None
    return config


def load_thinker(base_model_path, dtype=torch.float32, device="cpu", quantize: str | None = None):
    """Load ``Qwen2_5OmniThinkerForConditionalGeneration`` from a full-Omni or thinker-only directory.

    Raises ``ValueError`` naming the directory when a thinker weight is missing, has the wrong shape, or
    an unexpected (non talker / token2wav) weight is present. ``quantize`` (``int8``, ``nf4``): the language
    model's linear layers in 8 / 4 bits, quantized by transformers as each weight is read (bitsandbytes);
    the audio tower, vision tower and ``lm_head`` stay in ``dtype``.
    """
    quantize = check_quantize(quantize)
    extra = {} if quantize is None else {"quantization_config": transformers_config(quantize, resolve_dtype(dtype),
                                                                                    UNQUANTIZED)}
    from transformers import AutoConfig, Qwen2_5OmniThinkerForConditionalGeneration

    path = Path(base_model_path)
    raw = _read_config(path)
    model_type = raw.get("model_type")
    if model_type not in OMNI_TYPES:
        raise ValueError(f"{path}: model_type {model_type!r} is not a Qwen2.5-Omni checkpoint ({', '.join(OMNI_TYPES)})")
    # before transformers reads anything: shard names stay inside the directory, sizes fit the weights
    check_thinker_sizes(raw, path, with_weights=str(device) != "meta")
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if model_type == "qwen2_5_omni":
        config = config.thinker_config
    if str(device) == "meta":  # the architecture only (no weights read): shapes, parameter counts, key layouts
        with torch.device("meta"):
            return Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=resolve_dtype(dtype)).eval()
    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, config=config, dtype=resolve_dtype(dtype), local_files_only=True, output_loading_info=True,
        trust_remote_code=False,
        device_map={"": str(torch.device(device))}, **extra,
    )
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(_SKIPPED_PREFIXES)]
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing thinker weights: {sorted(info['missing_keys'])[:10]}")
    if info.get("mismatched_keys"):
        problems.append(f"shape mismatches: {list(info['mismatched_keys'])[:10]}")
    if unexpected:
        problems.append(f"unexpected weights: {sorted(unexpected)[:10]}")
    if problems:
        raise ValueError(f"{path}: checkpoint does not match the thinker config; " + "; ".join(problems))
    if quantize:
        release_free_memory()  # what quantizing freed (see fusionaudio.loading.quantize)
        return model.eval()  # placed by device_map
    return model.to(device).eval()
