"""The released AudSemThinker / Qwen2.5-Omni-7B thinker: its config values and key layout, as data.

transformers' default ``Qwen2_5OmniThinkerConfig`` is not the 7B release: it ties the word embeddings
and gives the vision tower a width of 3584. :data:`RELEASED_THINKER` holds the released values;
:func:`released_name` gives the key a parameter has in the released (transformers-4.x) checkpoint
(``thinker.model.*``, ``thinker.audio_tower.*``, ``thinker.visual.*``, ``thinker.lm_head.*``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

#: Qwen2.5-Omni-7B ``thinker_config`` (the architecture AudSemThinker fine-tunes), shape-relevant values.
RELEASED_THINKER = {
    "text_config": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                        rope_theta=1000000.0, tie_word_embeddings=False, hidden_act="silu",
                        rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"}),
    "audio_config": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         num_mel_bins=128, output_dim=3584, max_source_positions=1500, n_window=100),
    "vision_config": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                          in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                          fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu"),
}

def write_released_config(directory) -> Path:
    """A full-Omni ``config.json`` with the released thinker values (no weights)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniModel"], "enable_audio_output": False,
           "thinker_config": {"model_type": "qwen2_5_omni_thinker", **RELEASED_THINKER}}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def released_thinker_coverage() -> dict:
    """Build the 7B thinker on the meta device with ``load_thinker(..., device="meta")`` and compare
    its parameters with the released key layout (each maps to a released name and back)."""
    from fusionaudio.audsem.keymap import released_name, to_current_name
    from fusionaudio.audsem.loading import load_thinker

    with tempfile.TemporaryDirectory() as tmp:
        model = load_thinker(write_released_config(tmp), device="meta")
    params = dict(model.named_parameters())
    released = {released_name(n): n for n in params}
    back = {r: to_current_name("base_model.model." + r)[len("base_model.model."):] for r in released}
    round_trip = sum(back[r] == n for r, n in released.items())
    parts = {}
    for n, p in params.items():
        part = n.split(".")[1] if n.startswith("model.") else n.split(".")[0]
        parts[part] = parts.get(part, 0) + p.numel()
    return {
        "parameters": f"{sum(p.numel() for p in params.values()) / 1e9:.3f} B "
                      + ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in sorted(parts.items())),
        "tensors": len(params),
        "released names that map back onto the model": f"{round_trip} of {len(params)}",
        "lm_head tied to the embedding": bool(model.config.get_text_config().tie_word_embeddings),
    }
