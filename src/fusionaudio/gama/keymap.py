"""Key maps between the reference's checkpoint names and this project's, as data.

``REFERENCE_TO_LOCAL`` is an ordered list of ``(regex, replacement)``: the first rule that
matches a reference name (after the peft prefix ``base_model.model.`` is removed) decides;
``None`` marks a key that is known to be unused and is dropped on purpose. A name that no
rule matches is an error. ``LOCAL_TO_REFERENCE`` is the inverse (used to write
reference-format files, e.g. test fixtures); ``REFERENCE_ONLY`` lists the known-unused
reference tensors a faithful reference-format file also holds.
"""

from __future__ import annotations

import re

PEFT_PREFIX = "base_model.model."

REFERENCE_TO_LOCAL: list[tuple[str, str | None]] = [
    # --- known-unused -------------------------------------------------------------
    (r"\.rotary_emb\.inv_freq$", None),  # rebuilt from the config
    (r"^model\.audio_encoder\.blocks_a\.\d+\.norm[12]_[av]\.", None),  # blocks_a run norm1/norm2
    (r"^model\.audio_encoder\.blocks_u\.\d+\.norm[12](_v)?\.", None),  # blocks_u run norm1_a/norm2_a
    (r"^model\.Qformer\.bert\.embeddings\.(position_ids|word_embeddings\.|position_embeddings\.)", None),
    (r"^model\.Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.", None),  # text-side FF
    (r"^model\.Qformer\.cls\.", None),
    (r"^model\.audio_aggregator_layer_[12]\.(intermediate_query|output_query)\.", None),
    # --- used ---------------------------------------------------------------------
    (r"^model\.(embed_tokens|layers|norm)\.", r"llm.model.\1."),
    (r"^lm_head\.", "llm.lm_head."),
    (r"^model\.audio_encoder\.blocks_u\.(\d+)\.norm([12])_a\.", r"audio_encoder.blocks_u.\1.norm\2."),
    (r"^model\.audio_encoder\.", "audio_encoder."),
    (r"^model\.Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.layernorm."),
    (r"^model\.Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"qformer.encoder.layer.\1.\2.attention."),
    (r"^model\.Qformer\.bert\.encoder\.", "qformer.encoder."),
    (r"^model\.(audio_aggregator_layer_[12])\.(attention|crossattention)\.self\.", r"\1.\2.attention."),
    (r"^model\.(audio_aggregator_layer_[12]|query_tokens|qformer_proj_norm|audio_proj_qformer|audio_proj_audioenc)", r"\1"),
]

LOCAL_TO_REFERENCE: list[tuple[str, str]] = [
    (r"^llm\.model\.", "model."),
    (r"^llm\.lm_head\.", "lm_head."),
    (r"^audio_encoder\.blocks_u\.(\d+)\.norm([12])\.", r"model.audio_encoder.blocks_u.\1.norm\2_a."),
    (r"^audio_encoder\.", "model.audio_encoder."),
    (r"^qformer\.layernorm\.", "model.Qformer.bert.embeddings.LayerNorm."),
    (r"^qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.", r"model.Qformer.bert.encoder.layer.\1.\2.self."),
    (r"^qformer\.encoder\.", "model.Qformer.bert.encoder."),
    (r"^(audio_aggregator_layer_[12])\.(attention|crossattention)\.attention\.", r"model.\1.\2.self."),
    (r"^(audio_aggregator_layer_[12]|query_tokens|qformer_proj_norm|audio_proj_qformer|audio_proj_audioenc)", r"model.\1"),
]

# LoRA tensors: peft's own files drop the adapter name; the model's names carry it.
_LORA_NAME = re.compile(r"\.lora_([AB])\.weight$")

#: The reference's Trainer saves only keys whose name contains one of these.
REFERENCE_TRAINED_SUBSTRINGS = ("lora", "audio", "qformer", "Qformer", "query_tokens")

_COMPILED = [(re.compile(p), r) for p, r in REFERENCE_TO_LOCAL]
_COMPILED_INV = [(re.compile(p), r) for p, r in LOCAL_TO_REFERENCE]


class UnmappedKeyError(KeyError):
    pass


def reference_to_local(name: str) -> str | None:
    """Map one reference key to this project's name; ``None`` = known-unused.

    Raises :class:`UnmappedKeyError` for a name no rule covers."""
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX):]
    for pattern, repl in _COMPILED:
        if pattern.search(name):
            if repl is None:
                return None
            local = pattern.sub(repl, name, count=1)
            return _LORA_NAME.sub(r".lora_\1.default.weight", local)
    raise UnmappedKeyError(name)


def local_to_reference(name: str, peft: bool = False) -> str:
    """Inverse map (a LoRA-wrapped ``base_layer`` goes back to the plain weight name)."""
    name = name.replace(".base_layer.", ".")
    for pattern, repl in _COMPILED_INV:
        if pattern.search(name):
            ref = pattern.sub(repl, name, count=1)
            return PEFT_PREFIX + ref if peft else ref
    raise UnmappedKeyError(name)


def known_unused_group(name: str) -> str:
    """A short label for a known-unused reference key (for the one-line summary)."""
    for label, pattern in (
        ("rotary inv_freq", r"rotary_emb"),
        ("unused CAV-MAE norms", r"audio_encoder\.blocks_"),
        ("Q-Former text-side tensors", r"Qformer"),
        ("aggregator *_query feed-forward", r"aggregator"),
    ):
        if re.search(pattern, name):
            return label
    return "other"


def reference_only_entries(config) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of the known-unused tensors a reference base file holds."""
    d = config.audio.embed_dim
    head_dim = config.hidden_size // int(config.llm["num_attention_heads"])
    out: list[tuple[str, tuple[int, ...], str]] = []
    for i in range(config.audio.specific_depth):
        for n in ("norm1_a", "norm1_v", "norm2_a", "norm2_v"):
            out += [(f"model.audio_encoder.blocks_a.{i}.{n}.{p}", (d,), "float32") for p in ("weight", "bias")]
    for i in range(config.audio.unified_depth):
        for n in ("norm1", "norm1_v", "norm2", "norm2_v"):
            out += [(f"model.audio_encoder.blocks_u.{i}.{n}.{p}", (d,), "float32") for p in ("weight", "bias")]
    for i in range(int(config.llm["num_hidden_layers"])):
        out.append((f"model.layers.{i}.self_attn.rotary_emb.inv_freq", (head_dim // 2,), "float32"))
    out.append(("model.Qformer.bert.embeddings.position_ids", (1, 512), "int64"))
    agg = config.aggregator
    for layer in (1, 2):
        p = f"model.audio_aggregator_layer_{layer}"
        out += [
            (f"{p}.intermediate_query.dense.weight", (agg.intermediate_size, d), "float32"),
            (f"{p}.intermediate_query.dense.bias", (agg.intermediate_size,), "float32"),
            (f"{p}.output_query.dense.weight", (d, agg.intermediate_size), "float32"),
            (f"{p}.output_query.dense.bias", (d,), "float32"),
            (f"{p}.output_query.LayerNorm.weight", (d,), "float32"),
            (f"{p}.output_query.LayerNorm.bias", (d,), "float32"),
        ]
    return out
