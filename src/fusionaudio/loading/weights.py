"""Weight files (``.safetensors``, or pickles read with ``torch.load(weights_only=True)`` only) and dtypes."""

from __future__ import annotations

from pathlib import Path

import torch

from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import check_path, inside, read_json_file

#: The shard indexes of a sharded model directory (Hugging Face names), safetensors first.
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def index_files(index: Path) -> list[Path]:
    """The shard files a weight index (``*.index.json``) names in its ``weight_map``, in name order. Each
    name must stay inside the index's directory (:func:`~fusionaudio.loading.files.inside`): ``..``, an
    absolute path or a device is refused by name, before any shard is opened."""
    index = Path(index)
    weight_map = read_json_file(index, "weight index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: 'weight_map' must be an object of file names")
    return [inside(index.parent, name, "weight shard", index) for name in sorted(set(weight_map.values()))]


def check_weight_indexes(directory: Path) -> list[Path]:
    """Check the shard names of every weight index in ``directory`` (for loaders that read the index
    themselves, e.g. transformers' ``from_pretrained``); returns the shards of the first one found."""
    found = []
    for name in WEIGHT_INDEXES:
        index = Path(directory) / name
        if index.is_file() or index.is_symlink():
            files = index_files(index)
            found = found or files
    return found


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a pickled ``.bin/.pth/.pt`` state dict (weights only)."""
    path = check_path(Path(path), "checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: zero-byte checkpoint file")
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
        raise CheckpointError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return state


def state_keys(path: Path) -> list[str]:
    """The tensor names of a checkpoint file (safetensors: from the header only)."""
    if path.suffix == ".safetensors":
        check_path(path, "checkpoint file")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except Exception:  # noqa: BLE001 - load_state_file gives the precise error
            pass
    return list(load_state_file(path))


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]
