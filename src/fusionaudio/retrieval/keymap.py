"""Strict key map: the released WavCaps ASE state dict (``cp['model']``) -> ``AseModel``.

Rules are data: ``(pattern, target)`` regexes applied to the released name (first match wins).
``target`` kinds: a string (rename), ``SPLIT_QKV`` (HTS-AT's fused ``qkv`` -> ClapAudio's
``query``/``key``/``value``), ``DERIVED`` (a buffer our model recomputes: verified equal, then dropped),
``UNUSED`` (weights the original computes with and throws away: dropped, counted in the report).
Every released key must match a rule, every model entry must be filled, shapes must agree.
"""

from __future__ import annotations

from fusionaudio.errors import CheckpointError

import re

import torch

SPLIT_QKV, DERIVED, UNUSED = "<split-qkv>", "<derived>", "<unused>"
_A = r"^audio_encoder\.audio_enc\."
_BLK = _A + r"layers\.(\d+)\.blocks\.(\d+)\."
_OUT_BLK = r"audio_encoder.layers.\1.blocks.\2."

KEY_RULES: list[tuple[str, str]] = [
    (_A + r"audio_feats_extractor\.mel_trans\.stft\.conv_(real|imag)\.weight$", r"frontend.conv_\1"),
    (_A + r"audio_feats_extractor\.log_trans\.melW$", "frontend.melW"),
    (_A + r"bn0\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r"audio_encoder.batch_norm.\1"),
    (_A + r"patch_embed\.(proj|norm)\.(weight|bias)$", r"audio_encoder.patch_embed.\1.\2"),
    (_BLK + r"norm1\.(weight|bias)$", _OUT_BLK + r"layernorm_before.\3"),
    (_BLK + r"norm2\.(weight|bias)$", _OUT_BLK + r"layernorm_after.\3"),
    (_BLK + r"attn\.qkv\.(weight|bias)$", SPLIT_QKV),
    (_BLK + r"attn\.(relative_position_bias_table|relative_position_index)$", _OUT_BLK + r"attention.self.\3"),
    (_BLK + r"attn\.proj\.(weight|bias)$", _OUT_BLK + r"attention.output.dense.\3"),
    (_BLK + r"mlp\.fc1\.(weight|bias)$", _OUT_BLK + r"intermediate.dense.\3"),
    (_BLK + r"mlp\.fc2\.(weight|bias)$", _OUT_BLK + r"output.dense.\3"),
    (_BLK + r"attn_mask$", DERIVED),
    (_A + r"layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$",
     r"audio_encoder.layers.\1.downsample.\2"),
    (_A + r"norm\.(weight|bias)$", r"audio_encoder.norm.\1"),
    (_A + r"(tscam_conv|head)\.(weight|bias)$", UNUSED),
    (r"^text_encoder\.text_encoder\.embeddings\.position_ids$", DERIVED),
    (r"^text_encoder\.text_encoder\.(.+)$", r"text_encoder.\1"),
    (r"^(audio_proj|text_proj)\.(0|2)\.(weight|bias)$", r"\1.\2.\3"),
    (r"^temp$", "temp"),
]


class CheckpointMismatch(CheckpointError):
    """The checkpoint does not fit the model: the message names every offending key."""


def _target(key: str):
    for pattern, target in KEY_RULES:
        m = re.match(pattern, key)
        if m:
            return m, target
    return None, None


def _split_qkv(m: re.Match, value: torch.Tensor) -> dict[str, torch.Tensor]:
    layer, block, kind = m.group(1), m.group(2), m.group(3)
    parts = value.chunk(3, dim=0)
    return {f"audio_encoder.layers.{layer}.blocks.{block}.attention.self.{n}.{kind}": p
            for n, p in zip(("query", "key", "value"), parts)}


def map_state_dict(released: dict, expected_derived: dict) -> tuple[dict, dict]:
    """``(model_state, report)``; ``expected_derived`` maps a released DERIVED key to the value our model
    uses (``None`` where it uses none). Raises ``CheckpointMismatch`` naming keys that match no rule or
    whose derived value differs."""
    out, unknown, derived_bad, unused = {}, [], [], []
    for key, value in released.items():
        m, target = _target(key)
        if target is None:
            unknown.append(key)
        elif target == UNUSED:
            unused.append(key)
        elif target == DERIVED:
            want = expected_derived.get(key, "absent")
            if want is None or (isinstance(want, str)) or want.shape != value.shape or not torch.equal(
                    want.to(value.dtype), value):
                derived_bad.append(key)
        elif target == SPLIT_QKV:
            out.update(_split_qkv(m, value))
        else:
            out[m.expand(target)] = value
    problems = []
    if unknown:
        problems.append(f"unexpected key(s) (no rule in the ASE key map): {', '.join(unknown)}")
    if derived_bad:
        problems.append("buffer(s) that differ from the model's own (wrong config or layout?): "
                        + ", ".join(derived_bad))
    if problems:
        raise CheckpointMismatch("; ".join(problems))
    return out, {"unused": unused, "derived_checked": sorted(k for k in released if _target(k)[1] == DERIVED)}


def load_strict(model: torch.nn.Module, mapped: dict) -> None:
    """Copy ``mapped`` into ``model``: every entry filled, shapes equal, else ``CheckpointMismatch``."""
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    extra = [k for k in mapped if k not in own]
    shapes = [f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})"
              for k, v in mapped.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing key(s): {', '.join(missing)}")
    if extra:
        problems.append(f"key(s) the model does not have: {', '.join(extra)}")
    if shapes:
        problems.append(f"shape mismatch: {', '.join(shapes)}")
    if problems:
        raise CheckpointMismatch("; ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)
