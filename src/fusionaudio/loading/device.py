"""The device a model runs on: a CUDA request on a machine without CUDA falls back to the CPU, with a note."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> tuple[torch.device, str | None]:
    """(device, note): a CUDA request on a machine without CUDA falls back to CPU with a note."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu"), f"CUDA is not available, using CPU instead of {device}"
    return device, None
