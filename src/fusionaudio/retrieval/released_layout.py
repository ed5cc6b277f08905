"""The released WavCaps ASE key layout, generated for any ``AseModel`` (the inverse of ``keymap``).

Used to write checkpoints in the released layout (tiny test models, round trips); the order follows the
original state dict (manifest.json in shared/reference/wavcaps).
"""

from __future__ import annotations

import torch

from fusionaudio.retrieval.keymap import DERIVED, SPLIT_QKV, UNUSED, _target

NUM_CLASSES = 527  # HTS-AT's AudioSet head, stored but unused
_A = "audio_encoder.audio_enc."


def released_keys(model) -> list[str]:
    """The released key names for ``model``'s geometry, in the original order."""
    cfg = model.config
    keys = ["temp"] + [_A + "audio_feats_extractor.mel_trans.stft.conv_real.weight",
                       _A + "audio_feats_extractor.mel_trans.stft.conv_imag.weight",
                       _A + "audio_feats_extractor.log_trans.melW"]
    keys += [_A + f"bn0.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    keys += [_A + f"patch_embed.{n}" for n in ("proj.weight", "proj.bias", "norm.weight", "norm.bias")]
    derived = model.derived_buffers()
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            b = f"{_A}layers.{i}.blocks.{j}."
            if b + "attn_mask" in derived:
                keys.append(b + "attn_mask")
            keys += [b + n for n in ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
                                     "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                     "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                                     "mlp.fc2.weight", "mlp.fc2.bias")]
        if i < len(cfg.depths) - 1:
            keys += [f"{_A}layers.{i}.downsample.{n}" for n in ("reduction.weight", "norm.weight", "norm.bias")]
    keys += [_A + n for n in ("norm.weight", "norm.bias", "tscam_conv.weight", "tscam_conv.bias",
                              "head.weight", "head.bias")]
    keys.append("text_encoder.text_encoder.embeddings.position_ids")
    keys += ["text_encoder.text_encoder." + k for k in model.text_encoder.state_dict()]
    keys += [f"{p}.{i}.{n}" for p in ("audio_proj", "text_proj") for i in (0, 2) for n in ("weight", "bias")]
    return keys


def _unused(model, key: str, generator: torch.Generator) -> torch.Tensor:
    cfg = model.config
    sf = cfg.n_mels // (2 ** (len(cfg.depths) - 1) * cfg.patch_size)  # tscam_conv kernel height
    shapes = {"tscam_conv.weight": (NUM_CLASSES, cfg.audio_width, sf, 3), "tscam_conv.bias": (NUM_CLASSES,),
              "head.weight": (NUM_CLASSES, NUM_CLASSES), "head.bias": (NUM_CLASSES,)}
    return torch.randn(shapes[key[len(_A):]], generator=generator) * 0.02


def to_released(model, seed: int = 0) -> dict:
    """``model``'s weights as a released-layout state dict (unused head weights random, seeded)."""
    own = model.state_dict()
    derived = model.derived_buffers()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in released_keys(model):
        m, target = _target(key)
        if target == DERIVED:
            out[key] = derived[key].clone()
        elif target == SPLIT_QKV:
            base = f"audio_encoder.layers.{m.group(1)}.blocks.{m.group(2)}.attention.self"
            out[key] = torch.cat([own[f"{base}.{n}.{m.group(3)}"] for n in ("query", "key", "value")])
        elif target == UNUSED:
            out[key] = _unused(model, key, gen)
        else:
            out[key] = own[m.expand(target)].clone()
    return out
