"""``fusionaudio export``: a base-format directory with LoRA folded into the Llama weights.

    fusionaudio export --base_model DIR [--model_path CKPT] --output OUT --merge [--dtype bfloat16]

With ``--merge`` the output is a reference-format base directory (the reference's key names,
``model-0000N-of-0000M.safetensors`` shards + index, ``config.json`` with a ``fusionaudio`` section that
says "no LoRA", the tokenizer) that loads with no adapter and gives the same logits, for tools that do
not speak LoRA. Without ``--merge`` it is ``fusionaudio convert`` (this project's layout, LoRA kept).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.modeling import GamaForCausalLM
from fusionaudio.gama.keymap import local_to_reference
from fusionaudio.gama.loading import convert, load_model
from fusionaudio.loading.quantize import merge_note, refuse_merge
from fusionaudio.loading.weights import resolve_dtype

log = logging.getLogger("fusionaudio.gama.export")

DEFAULT_SHARD_BYTES = 5 * 1024**3


def merge_lora(model: GamaForCausalLM) -> GamaForCausalLM:
    """Fold every LoRA adapter into its Linear (W + scale * B @ A) and drop the adapters (peft's own
    ``merge``); afterwards the model has no LoRA and ``config.lora`` is None."""
    from peft.tuners.lora import LoraLayer

    refuse_merge(model)
    wrapped = [(name, m) for name, m in model.llm.named_modules() if isinstance(m, LoraLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.llm.get_submodule(parent_name) if parent_name else model.llm
        setattr(parent, child, module.get_base_layer())
    model.lora_enabled = False
    model.config.lora = None
    return model


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = state[name]
        size += nbytes
    return shards + ([current] if current else [])


def write_reference_config(config: GamaConfig, out: Path, with_section: bool = True) -> None:
    """config.json as a reference base directory has it (+ our ``fusionaudio`` section)."""
    d = dict(config.llm, architectures=["LlamaForCausalLM"], model_type="llama", torch_dtype="float32")
    if with_section:
        section = config.to_dict()
        section.pop("llm")
        d["fusionaudio"] = section
    (out / "config.json").write_text(json.dumps(d, indent=2))


def save_reference_layout(model: GamaForCausalLM, tokenizer, output_dir, dtype=None,
                          max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write ``model`` (no LoRA) as a reference-format base directory."""
    from safetensors.torch import save_file

    if model.lora_enabled:
        raise ValueError("merge the LoRA adapters first (merge_lora)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype(dtype) if dtype is not None else None
    state = {local_to_reference(k): (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    shards = _shards(state, max_shard_bytes)
    weight_map = {}
    for i, part in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in state.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
    write_reference_config(model.config, out)
    if dtype is not None:
        cfg = json.loads((out / "config.json").read_text())
        cfg["torch_dtype"] = str(dtype).replace("torch.", "")
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def export(base_model: str, output: str, model_path: str | None = None, merge: bool = False,
           dtype: str | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> str:
    """``fusionaudio export`` for GAMA: merged reference-format directory (``merge``) or ``convert``'s layout."""
    if not merge:
        return convert(base_model, output, model_path, dtype)
    if note := merge_note(model_path, "training_args.json"):
        log.warning(note)
    model, tok = load_model(base_model, model_path, device="cpu", dtype=torch.float32)
    if model.lora_enabled:
        merge_lora(model)
    return str(save_reference_layout(model, tok, output, dtype=dtype, max_shard_bytes=max_shard_bytes))
