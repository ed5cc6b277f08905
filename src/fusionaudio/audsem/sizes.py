"""Every size of a Qwen2.5-Omni thinker config against the tensors of its directory, before anything is built.

Checked on the raw ``config.json`` (transformers' config classes themselves build per-layer lists), with
the weights' names mapped to transformers-5 names (:func:`~fusionaudio.audsem.keymap.to_current_name`), so
released (``thinker.model.*``), thinker-only (``model.*``) and current (``model.language_model.*``) layouts
share one table. Without weights (``load_thinker(..., device="meta")``, or a directory with no weight
file) the layer counts are held to :data:`~fusionaudio.loading.sizes.MAX_LAYERS` instead. See
:mod:`fusionaudio.loading.sizes`.
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.audsem.keymap import to_current_name
from fusionaudio.loading.sizes import MAX_LAYERS, MAX_POSITIONS, SizeCheck, check_heads, flatten, tensor_shapes
from fusionaudio.loading.weights import check_weight_indexes

#: The most audio positions a config may declare (the audio tower allocates a ``positions x d_model`` table
#: when it is built; Qwen2.5-Omni has 1,500).
MAX_AUDIO_POSITIONS = 1 << 15
_PEFT = "base_model.model."


def thinker_weight_files(directory: Path) -> list[Path]:
    """The weight files transformers will read from ``directory``: an index's shards (each name checked to
    stay inside the directory) or the single file; ``[]`` when there is none."""
    shards = check_weight_indexes(directory)
    if shards:
        return shards
    return [p for p in (directory / "model.safetensors", directory / "pytorch_model.bin")
            if p.is_file() or p.is_symlink()][:1]


def current_shapes(shapes: dict) -> dict:
    return {to_current_name(_PEFT + k)[len(_PEFT):]: v for k, v in shapes.items()}


def _layers(c: SizeCheck, field: str, prefix: str, with_weights: bool) -> None:
    if with_weights:
        c.layers(field, prefix)
    else:
        c.bound(field, 1, MAX_LAYERS)


def size_problems(thinker: dict, shapes: dict | None, source, prefix: str = "") -> SizeCheck:
    """Checks of a thinker config (``thinker``: its JSON object) against ``shapes`` (None: bounds only)."""
    c = SizeCheck(source, flatten(thinker), current_shapes(shapes or {}), lambda f: prefix + f)
    weights = shapes is not None
    t, lm = "text_config.", "model.language_model."
    _layers(c, t + "num_hidden_layers", lm + "layers.", weights)
    c.dim(t + "vocab_size", lm + "embed_tokens.weight", 0)
    c.dim(t + "hidden_size", lm + "embed_tokens.weight", 1)
    c.dim(t + "intermediate_size", lm + "layers.0.mlp.gate_proj.weight", 0)
    check_heads(c, t + "num_attention_heads", t + "num_key_value_heads", t + "hidden_size", t + "head_dim",
                lm + "layers.0.self_attn.k_proj.weight")
    c.bound(t + "max_position_embeddings", 1, MAX_POSITIONS)
    c.token_ids((t + "pad_token_id", t + "bos_token_id", t + "eos_token_id"), t + "vocab_size")
    a, at = "audio_config.", "model.audio_tower."
    _layers(c, a + "encoder_layers", at + "layers.", weights)
    c.dim(a + "d_model", at + "conv1.weight", 0)
    c.dim(a + "num_mel_bins", at + "conv1.weight", 1)
    c.dim(a + "encoder_ffn_dim", at + "layers.0.fc1.weight", 0)
    c.dim(a + "output_dim", at + "proj.weight", 0)
    c.divides(a + "encoder_attention_heads", a + "d_model")
    c.bound(a + "max_source_positions", 1, MAX_AUDIO_POSITIONS)
    c.bound(a + "n_window", 1, MAX_AUDIO_POSITIONS)
    v, vis = "vision_config.", "model.visual."
    _layers(c, v + "depth", vis + "blocks.", weights)
    c.dim(v + "hidden_size", vis + "patch_embed.proj.weight", 0)
    c.dim(v + "in_channels", vis + "patch_embed.proj.weight", 1)
    c.dim(v + "temporal_patch_size", vis + "patch_embed.proj.weight", 2)
    c.dim(v + "patch_size", vis + "patch_embed.proj.weight", 3)
    c.dim(v + "intermediate_size", vis + "blocks.0.mlp.gate_proj.weight", 0)
    c.dim(v + "out_hidden_size", vis + "merger.mlp.2.weight", 0)
    c.divides(v + "num_heads", v + "hidden_size")
    c.bound(v + "spatial_merge_size", 1, 64)
    return c


def check_thinker_sizes(config: dict, directory: Path, with_weights: bool = True) -> None:
    """``config``: the directory's ``config.json`` (a full Omni config or a thinker config). Raises one
    :class:`~fusionaudio.errors.CheckpointError` naming every field that disagrees with the weights."""
    full = config.get("model_type") == "qwen2_5_omni"
    thinker = config.get("thinker_config") if full else config
    if not isinstance(thinker, dict):
        return  # transformers reports a malformed config itself
    files = thinker_weight_files(Path(directory)) if with_weights else []
    shapes = tensor_shapes(files) if files else None
    source = Path(directory) / "config.json"
    size_problems(thinker, shapes, source, "thinker_config." if full else "").raise_problems()
