"""Every size of a GAMA config against the tensors of its base directory, before the model is built.

The tensor names are mapped to this project's names (:func:`~fusionaudio.gama.keymap.reference_to_local`)
so that one table serves both layouts; the field names in the error are those of the file the config
came from (``num_hidden_layers`` in a reference ``config.json``, ``llm.num_hidden_layers`` in
``fusionaudio_config.json``). See :mod:`fusionaudio.loading.sizes`.
"""

from __future__ import annotations

from dataclasses import asdict

from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.keymap import UnmappedKeyError, reference_to_local
from fusionaudio.loading.sizes import MAX_POSITIONS, SizeCheck, check_heads, flatten, tensor_shapes


def local_shapes(shapes: dict, layout: str) -> dict:
    """Tensor shapes under this project's names (LoRA-wrapped ``base_layer`` names unwrapped)."""
    out = {}
    for name, shape in shapes.items():
        if layout == "reference":
            try:
                name = reference_to_local(name)
            except UnmappedKeyError:
                continue  # the strict load lists it
            if name is None:
                continue
        out[name.replace(".base_layer.", ".")] = shape
    return out


def _label(layout: str):
    def label(field: str) -> str:
        if layout != "reference":
            return field
        return field[len("llm."):] if field.startswith("llm.") else f"fusionaudio.{field}"
    return label


def size_problems(config: GamaConfig, shapes: dict, layout: str, source) -> SizeCheck:
    """The checks of ``config`` against ``shapes`` (this project's tensor names)."""
    flat = flatten({"llm": config.llm, **{k: asdict(getattr(config, k)) for k in ("audio", "qformer", "aggregator")}})
    if config.lora is not None:
        flat.update(flatten({"lora": asdict(config.lora)}))
    c = SizeCheck(source, flat, shapes, _label(layout))
    layer0 = "llm.model.layers.0."
    c.layers("llm.num_hidden_layers", "llm.model.layers.")
    c.dim("llm.vocab_size", "llm.model.embed_tokens.weight", 0)
    c.dim("llm.hidden_size", "llm.model.embed_tokens.weight", 1)
    c.dim("llm.intermediate_size", layer0 + "mlp.gate_proj.weight", 0)
    check_heads(c, "llm.num_attention_heads", "llm.num_key_value_heads", "llm.hidden_size", "llm.head_dim",
                layer0 + "self_attn.k_proj.weight")
    c.bound("llm.max_position_embeddings", 1, MAX_POSITIONS)
    c.token_ids(("llm.pad_token_id", "llm.bos_token_id", "llm.eos_token_id"), "llm.vocab_size")
    a = "audio_encoder."
    c.layers("audio.specific_depth", a + "blocks_a.")
    c.layers("audio.unified_depth", a + "blocks_u.")
    c.dim("audio.embed_dim", a + "patch_embed_a.proj.weight", 0)
    c.dim("audio.patch_size", a + "patch_embed_a.proj.weight", 2)
    c.divides("audio.num_heads", "audio.embed_dim")
    _audio_grid(c, config, shapes)
    q = "qformer.encoder.layer."
    c.layers("qformer.num_hidden_layers", q)
    c.dim("qformer.num_query_tokens", "query_tokens", 1)
    c.dim("qformer.hidden_size", "query_tokens", 2)
    c.dim("qformer.intermediate_size", q + "0.intermediate_query.dense.weight", 0)
    c.divides("qformer.num_attention_heads", "qformer.hidden_size")
    c.bound("qformer.cross_attention_frequency", 1, max(1, config.qformer.num_hidden_layers))
    c.dim("aggregator.intermediate_size", "audio_aggregator_layer_1.intermediate.dense.weight", 0)
    c.divides("aggregator.num_attention_heads", "audio.embed_dim")
    if config.lora is not None:  # LoRA tensors may come later (a checkpoint): the rank is bounded by the width
        c.bound("lora.r", 1, max(1, int(config.llm.get("hidden_size", 1))))
    return c


def _audio_grid(c: SizeCheck, config: GamaConfig, shapes: dict) -> None:
    """The patch grid (mel bins x frames / patch size) is the length of the audio position embedding."""
    pos = shapes.get("audio_encoder.pos_embed_a")
    audio = config.audio
    if pos is not None and len(pos) == 3 and pos[1] != audio.grid[0] * audio.grid[1]:
        c.problems.append(f"{c.label('audio.num_mel_bins')}/{c.label('audio.target_length')} "
                          f"({audio.num_mel_bins}/{audio.target_length}, patch {audio.patch_size}) give "
                          f"{audio.grid[0] * audio.grid[1]} patches but the weights' audio position embedding has "
                          f"{pos[1]}")
    mlp = shapes.get("audio_encoder.blocks_a.0.mlp.fc1.weight")
    if mlp is not None and mlp[0] != int(audio.embed_dim * audio.mlp_ratio):
        c.problems.append(f"{c.label('audio.mlp_ratio')} is {audio.mlp_ratio} but the weights' blocks have "
                          f"{mlp[0]} hidden units for width {audio.embed_dim}")


def check_sizes(config: GamaConfig, files, layout: str, source) -> None:
    """Raise one :class:`CheckpointError` naming every config field the weight ``files`` disagree with."""
    size_problems(config, local_shapes(tensor_shapes(files), layout), layout, source).raise_problems()
