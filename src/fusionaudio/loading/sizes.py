"""A config's sizes against the weights it comes with, checked before any module is built.

A model directory's config is untrusted: ``num_hidden_layers: 1000000`` would have a loader build a
million layers (minutes, gigabytes) before it found that the weights hold 32. So every size a family's
config gives is compared with what its weight files actually hold -- tensor names and shapes, read from
the safetensors headers or a memory-mapped ``torch.load(weights_only=True)``, never the data -- or,
where no tensor carries it, held to a documented bound (:data:`MAX_POSITIONS`, :data:`MAX_LAYERS`).
Every disagreement is listed in one :class:`CheckpointError` naming the config field.

The rules per family live beside the family (``gama/sizes.py``, ``audsem/sizes.py``,
``retrieval/sizes.py``); this module has the reading and the checking.
"""

from __future__ import annotations

import re
from pathlib import Path

from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import check_path

#: The longest context (positions) a config may declare: 1,048,576 (Llama-2 has 4,096, Qwen2.5-Omni 32,768).
MAX_POSITIONS = 1 << 20
#: The most layers a config may declare where no weights are read (an architecture built on the meta device).
MAX_LAYERS = 1024


def tensor_shapes(files) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of weight files, without reading their data: safetensors headers, or a
    memory-mapped ``torch.load(weights_only=True)`` of a ``.bin``/``.pth`` (never unpickled otherwise)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        path = check_path(Path(path), "checkpoint file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: zero-byte checkpoint file")
        try:
            shapes.update(_file_shapes(path))
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt file: the loader's own read names the problem
            raise CheckpointError(f"{path}: cannot read the tensor shapes: {type(exc).__name__}: {exc}") from exc
    return shapes


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:  # the legacy (non-zip) format cannot be mapped: read it whole
        if "mmap" not in str(exc):
            raise
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (objects only; lists stay values)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SizeCheck:
    """Collects the fields of ``config`` (a flat ``{dotted field: value}``) that disagree with ``shapes``;
    :meth:`raise_problems` raises one error naming them all. A field the config does not set, or a tensor
    the weights lack, is skipped (the loader's strict key check reports a missing tensor by name).
    ``label`` maps a field to the name shown (e.g. the field's name in the file it came from)."""

    def __init__(self, source, config: dict, shapes: dict, label=None):
        self.source, self.config, self.shapes = source, config, shapes
        self.label = label or (lambda field: field)
        self.problems: list[str] = []

    def value(self, field: str):
        """The field's value when it is set and an integer (a wrong type is a problem, and None here)."""
        value = self.config.get(field)
        if value is None:
            return None
        if not _is_int(value):
            problem = f"{self.label(field)} must be an integer, got {value!r}"
            if problem not in self.problems:
                self.problems.append(problem)
            return None
        return value

    def layers(self, field: str, prefix: str, value=None) -> None:
        """``field`` counts the layers ``{prefix}{N}.*`` of the weights (1 + the largest N)."""
        value = self.value(field) if value is None else value
        if value is None:
            return
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = [int(m.group(1)) for m in map(pattern.match, self.shapes) if m]
        held = max(found) + 1 if found else 0
        if value != held:
            self.problems.append(f"{self.label(field)} is {value} but the weights hold {held} "
                                 f"({prefix}N.* for N < {held})")

    def dim(self, field: str, key: str, axis: int, per: int = 1) -> None:
        """``field`` (times ``per``) is the size of axis ``axis`` of tensor ``key``."""
        value = self.value(field)
        shape = self.shapes.get(key)
        if value is None or shape is None or len(shape) <= axis:
            return
        if value * per != shape[axis]:
            times = f" x {per}" if per != 1 else ""
            self.problems.append(f"{self.label(field)} is {value}{times} but the weights' {key} has shape "
                                 f"{shape} ({shape[axis]} on axis {axis})")

    def divides(self, field: str, of: str) -> None:
        """``field`` (a head count) must be at least 1 and divide ``of`` (a width)."""
        value, width = self.value(field), self.value(of)
        if value is None or width is None:
            return
        if value < 1 or width % value:
            self.problems.append(f"{self.label(field)} is {value}; it must be >= 1 and divide "
                                 f"{self.label(of)} ({width})")

    def bound(self, field: str, low: int, high: int) -> None:
        """``field`` must lie in ``[low, high]`` (a documented bound, for sizes no tensor carries)."""
        value = self.value(field)
        if value is not None and not low <= value <= high:
            self.problems.append(f"{self.label(field)} is {value}; it must be between {low:,} and {high:,}")

    def token_ids(self, fields, vocab: str) -> None:
        """Token ids (an integer, a list of them, or null) must index the embedding: ``0 <= id < vocab``
        (``-1``, "none" in older configs, is let through). An id past the vocabulary fails deep inside
        torch (an embedding's ``padding_idx``) or never matches."""
        size = self.value(vocab)
        if size is None:
            return
        for field in fields:
            value = self.config.get(field)
            for token in value if isinstance(value, list) else [value]:
                if token is not None and (not _is_int(token) or not -1 <= token < size):
                    self.problems.append(f"{self.label(field)} is {value!r}; a token id must be below "
                                         f"{self.label(vocab)} ({size})")
                    break

    def raise_problems(self) -> None:
        if self.problems:
            raise CheckpointError(f"{self.source}: the config does not fit the weights: " + "; ".join(self.problems))


def check_heads(check: SizeCheck, heads: str, kv_heads: str, hidden: str, head_dim: str, k_proj: str) -> None:
    """Attention heads of a Llama/Qwen-style layer: ``heads`` divides ``hidden`` (unless ``head_dim`` is
    set) and ``kv_heads`` x the head width is the height of ``k_proj``."""
    width = check.value(head_dim)
    if width is None:
        check.divides(heads, hidden)
        h, n = check.value(hidden), check.value(heads)
        width = h // n if h and n and n >= 1 and h % n == 0 else None
    if width:
        check.dim(kv_heads if check.config.get(kv_heads) is not None else heads, k_proj, 0, per=width)
