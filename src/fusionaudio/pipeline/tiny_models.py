"""TINY RANDOM models of each stage's real class, built offline (no hub): for tests, benchmarks and
the bundled example config. Their outputs are meaningless; every directory carries a
``TINY_RANDOM_MODEL.txt`` saying so.

Kinds: ``whisper`` (WhisperForConditionalGeneration), ``ast`` (ASTForAudioClassification),
``clap`` (ClapModel), ``llm`` (LlamaForCausalLM), ``vlm`` (LlavaForConditionalGeneration, CLIP
vision + Llama text), ``qwen2_audio`` (Qwen2AudioForConditionalGeneration), ``demucs`` (HTDemucs, when the demucs package is installed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch

log = logging.getLogger("fusionaudio.pipeline")
TAG_LABELS = ["Speech", "Music", "Singing", "Musical instrument", "Dog", "Vehicle", "Silence", "Noise", "Bird",
              "Sine wave"]
MARKER = "TINY_RANDOM_MODEL.txt"


def _byte_symbols() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def build_whisper(out: Path) -> None:
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    (out / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(_byte_symbols())}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", "<|notimestamps|>"]})
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16,
                        max_source_positions=250, max_target_positions=64, decoder_start_token_id=sot,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=sot, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, max_length=64)
    model.save_pretrained(out)
    fe = WhisperFeatureExtractor(feature_size=16, chunk_length=5, sampling_rate=16000)  # 5 s windows
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)


def build_ast(out: Path) -> None:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    cfg = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_mel_bins=16,
                    max_length=128, patch_size=16, frequency_stride=16, time_stride=16,
                    id2label=dict(enumerate(TAG_LABELS)), label2id={lab: i for i, lab in enumerate(TAG_LABELS)})
    ASTForAudioClassification(cfg).save_pretrained(out)
    ASTFeatureExtractor(num_mel_bins=16, max_length=128, sampling_rate=16000).save_pretrained(out)


def build_clap(out: Path) -> None:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    symbols = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"] + _byte_symbols()
    tok = RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[])
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=2,
                              fft_window_size=400, frequency_max=8000, truncation="rand_trunc", padding="repeatpad")
    cfg = ClapConfig(
        text_config=dict(vocab_size=len(symbols), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=514, projection_dim=16),
        audio_config=dict(num_mel_bins=16, spec_size=64, window_size=4, patch_size=4, patch_stride=4, depths=[1, 1],
                          num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_dim=16),
        projection_dim=16)
    ClapModel(cfg).save_pretrained(out)
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)


def _byte_tokenizer(extra_specials=()):
    """A byte-level BPE tokenizer without merges (one token per byte), built instantly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", *extra_specials]
    tk = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(specials + _byte_symbols())}, merges=[],
                              unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", additional_special_tokens=list(extra_specials))


def build_llm(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _byte_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)


def build_vlm(out: Path) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _byte_tokenizer(["<image>"])
    image_id = tok.convert_tokens_to_ids("<image>")
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          image_token="<image>", num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        image_token_id=image_id, vision_feature_layer=-1, vision_feature_select_strategy="default")
    LlavaForConditionalGeneration(cfg).save_pretrained(out)
    proc.save_pretrained(out)


QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_qwen2_audio(out: Path) -> None:
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    tok = _byte_tokenizer(["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>", "<|im_start|>", "<|im_end|>"])
    tok.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=16, chunk_length=5, sampling_rate=16000)
    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=16,
                          max_source_positions=250),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioForConditionalGeneration(cfg).save_pretrained(out)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE).save_pretrained(out)


DEMUCS_TINY_KWARGS = dict(sources=["drums", "bass", "other", "vocals"], audio_channels=2, channels=4, depth=2,
                          nfft=512, t_layers=1, t_heads=2, t_hidden_scale=1.0, samplerate=16000, segment=2,
                          dconv_comp=2, t_cape_augment=False)


def build_demucs(out: Path) -> None:
    from demucs.htdemucs import HTDemucs
    from safetensors.torch import save_file

    model = HTDemucs(**DEMUCS_TINY_KWARGS)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "demucs_config.json").write_text(json.dumps({"class": "HTDemucs", "kwargs": DEMUCS_TINY_KWARGS}, indent=1))


BUILDERS = {"whisper": build_whisper, "ast": build_ast, "clap": build_clap, "llm": build_llm, "vlm": build_vlm,
            "qwen2_audio": build_qwen2_audio, "demucs": build_demucs}


def ensure_tiny_model(kind: str, root, seed: int = 0) -> Path:
    """``root/kind``, built (seeded, offline) if absent; concurrent builders are safe (build + rename)."""
    if kind not in BUILDERS:
        raise ValueError(f"no tiny {kind!r} model; kinds: {sorted(BUILDERS)}")
    final = Path(root) / kind
    if (final / MARKER).is_file():
        return final
    tmp = Path(root) / f".{kind}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    BUILDERS[kind](tmp)
    (tmp / MARKER).write_text(f"A TINY RANDOM {kind} model built offline by fusionaudio.pipeline.tiny_models "
                              f"(seed {seed}). Its outputs are meaningless: it exists to test the pipeline.\n")
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / MARKER).is_file():
            raise
    log.info("built tiny random %s model in %s", kind, final)
    return final


def make_tiny_models(root, kinds=None) -> dict[str, Path]:
    kinds = kinds or [k for k in BUILDERS if k != "demucs" or _has_demucs()]
    return {k: ensure_tiny_model(k, root) for k in kinds}


def _has_demucs() -> bool:
    try:
        import demucs  # noqa: F401
    except ImportError:
        return False
    return True
