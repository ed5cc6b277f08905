"""Build a tiny random Qwen2.5-Omni checkpoint directory offline (tests, demos, CI).

The directory has the layout of a real one: ``config.json``, ``model.safetensors``,
``generation_config.json``, tokenizer files (a byte-level BPE trained here in milliseconds, with
Qwen2.5-Omni's special tokens), ``preprocessor_config.json`` (a 128-bin WhisperFeatureExtractor) and
``chat_template.json``. With ``full_omni=True`` the config is a ``Qwen2_5OmniConfig`` and the weights
carry the ``thinker.`` prefix plus a few ``talker.`` / ``token2wav.`` tensors, as in the released
Qwen2.5-Omni / AudSemThinker checkpoints; otherwise it is a thinker-only directory.

    python -m fusionaudio.audsem.tiny OUT_DIR [--full_omni]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fusionaudio.audsem.config import CAPTION_INSTRUCTION, CHAT_TEMPLATE, QA_INSTRUCTION, SPECIAL_TOKENS, SYSTEM_PROMPT

__all__ = ["build_tiny_tokenizer", "tiny_thinker_config", "build_tiny_checkpoint"]

# Order fixes the special-token ids (appended after the BPE vocabulary).
_SPECIAL_ORDER = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>",
)

_CORPUS = (
    SYSTEM_PROMPT,
    CAPTION_INSTRUCTION,
    QA_INSTRUCTION,
    "system user assistant Question: What is making the sound? Describe the audio.",
    "<think>I hear a dog barking in a backyard at night.</think>",
    "<semantic_elements>who: a dog\nwhat: the dog's voice\nhow: barking\nwhen: night\nwhere: backyard</semantic_elements>",
    "<answer>A dog barks repeatedly outdoors.</answer>",
    "A man speaks while a car engine idles and birds chirp. Water flows, wind blows, music plays softly.",
)


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (``Qwen2Tokenizer``) with Qwen2.5-Omni's special tokens, trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(_SPECIAL_ORDER),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(_CORPUS) * 4, trainer)
    raw.add_special_tokens(list(_SPECIAL_ORDER))
    named = {k: v for k, v in SPECIAL_TOKENS.items() if k not in ("pad_token", "eos_token", "im_start")}
    tok = Qwen2Tokenizer(
        tokenizer_object=raw,
        bos_token=None,
        unk_token=None,
        eos_token=SPECIAL_TOKENS["eos_token"],
        pad_token=SPECIAL_TOKENS["pad_token"],
        extra_special_tokens=named,
    )
    tok.add_special_tokens({"extra_special_tokens": [SPECIAL_TOKENS["im_start"]]}, replace_extra_special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_thinker_config(tokenizer):
    """The smallest ``Qwen2_5OmniThinkerConfig`` that builds and generates, with ids taken from ``tokenizer``."""
    from transformers import Qwen2_5OmniThinkerConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIAL_ORDER}
    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
            d_model=64, n_window=100, output_dim=64,
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[0],
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]),
            pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None,
        ),
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
    )


def _legacy_omni_key(key: str) -> str:
    """transformers-5 thinker key -> the key a released Qwen2.5-Omni checkpoint stores."""
    for new, old in (("model.language_model.", "model."), ("model.audio_tower.", "audio_tower."), ("model.visual.", "visual.")):
        if key.startswith(new):
            return "thinker." + old + key[len(new):]
    return "thinker." + key


def build_tiny_checkpoint(out_dir, full_omni: bool = False, seed: int = 0, chunk_seconds: int = 4) -> Path:
    """Write a tiny random Qwen2.5-Omni checkpoint to ``out_dir`` and return its path.

    ``chunk_seconds`` is the feature extractor's window (audio longer than this is truncated by the
    processor, as with the real 30 s+ window); small values keep tests fast.
    """
    from safetensors.torch import save_file
    from transformers import GenerationConfig, Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration
    from transformers import WhisperFeatureExtractor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    tok.save_pretrained(out)
    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=chunk_seconds, n_fft=400,
        padding_value=0.0, return_attention_mask=True,
    )
    fe_dict = fe.to_dict()
    fe_dict["processor_class"] = "Qwen2_5OmniProcessor"
    fe_dict.pop("mel_filters", None)
    (out / "preprocessor_config.json").write_text(json.dumps(fe_dict, indent=2))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))

    cfg = tiny_thinker_config(tok)
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
    # Key layout of released checkpoints (transformers 4.5x): "model.layers.*", "audio_tower.*", "visual.*",
    # "lm_head.*" for a thinker, all prefixed "thinker." inside a full Omni checkpoint.
    state = {_legacy_omni_key(k): v.clone().contiguous() for k, v in model.state_dict().items()}
    if full_omni:
        # The talker / token2wav configs stay at their defaults: only the thinker is ever built. (transformers
        # itself logs "tts_text_start_token_id must be ... within the vocabulary" whenever it instantiates a
        # default talker config, e.g. when it prints or diffs an Omni config; that notice is harmless.)
        omni = Qwen2_5OmniConfig(thinker_config=cfg.to_dict(), enable_audio_output=False)
        omni.save_pretrained(out)
        state["talker.model.embed_tokens.weight"] = torch.zeros(4, 8)
        state["token2wav.code_embedding.weight"] = torch.zeros(4, 8)
    else:
        state = {k[len("thinker."):]: v for k, v in state.items()}
        cfg.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    GenerationConfig(
        eos_token_id=cfg.text_config.eos_token_id, pad_token_id=cfg.text_config.pad_token_id, do_sample=False
    ).save_pretrained(out)
    return out


def _main(out_dir: str, full_omni: bool = False, seed: int = 0) -> str:
    return str(build_tiny_checkpoint(out_dir, full_omni=full_omni, seed=seed))


if __name__ == "__main__":
    from fusionaudio.commands import function_main

    raise SystemExit(function_main(_main, "python -m fusionaudio.audsem.tiny"))
