"""WavCaps "ASE" retrieval model (the released FusionAudio-Retrieval checkpoint) on stock parts.

Audio: the WavCaps log-mel front end (``frontend.LogMel``, kernels from the checkpoint), then
transformers' ``ClapAudioEncoder`` -- the HTS-AT port, whose BatchNorm over mel bins, bicubic stretch to
``spec_size * freq_ratio`` frames, 4-chunk image, Swin stages, patch merging and mean pooling are the
WavCaps HTS-AT's (checked against the original code: docs/retrieval.md) -- then Linear-ReLU-Linear and L2
normalisation. Text: ``BertModel`` (no pooler, eager attention) from a local directory's config, the
[CLS] row, Linear-ReLU-Linear, L2 normalisation. ``temp`` is kept but unused (as in the original).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusionaudio.retrieval import frontend
from fusionaudio.retrieval.keymap import CheckpointMismatch, load_strict, map_state_dict
from fusionaudio.retrieval.sizes import check_ase_sizes

TEXT_MAX_LENGTH = 30
_A = "audio_encoder.audio_enc."


@dataclass(frozen=True)
class AseConfig:
    """One config object for the model; defaults are FusionAudio-Retrieval's (WavCaps inference.yaml)."""

    sample_rate: int = frontend.SAMPLE_RATE
    n_fft: int = frontend.N_FFT
    hop_length: int = frontend.HOP_LENGTH
    n_mels: int = frontend.N_MELS
    spec_size: int = 256
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    embed_size: int = 1024
    text_max_length: int = TEXT_MAX_LENGTH

    @property
    def audio_width(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def max_frames(self) -> int:
        return self.spec_size * (self.spec_size // self.n_mels)

    @property
    def max_samples(self) -> int:
        return frontend.max_samples(self.max_frames, self.hop_length)

    def clap_audio_config(self):
        from transformers import ClapAudioConfig

        return ClapAudioConfig(
            spec_size=self.spec_size, num_mel_bins=self.n_mels, patch_size=self.patch_size,
            patch_stride=self.patch_size, patch_embed_input_channels=1, patch_embeds_hidden_size=self.embed_dim,
            hidden_size=self.audio_width, depths=list(self.depths), num_attention_heads=list(self.num_heads),
            window_size=self.window_size, mlp_ratio=self.mlp_ratio, qkv_bias=True, hidden_act="gelu",
            enable_fusion=False, enable_patch_layer_norm=True, flatten_patch_embeds=True, layer_norm_eps=1e-5,
            drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    @classmethod
    def from_state_dict(cls, sd: dict, yaml_config: dict | None = None) -> "AseConfig":
        """Read the HTS-AT geometry off the released tensors' shapes (and ``cp['config']`` when present)."""
        def shape(key):
            if key not in sd:
                raise CheckpointMismatch(f"missing key(s): {key} (needed to read the model geometry)")
            return tuple(sd[key].shape)

        embed, _, patch, _ = shape(_A + "patch_embed.proj.weight")
        n_mels = shape(_A + "bn0.weight")[0]
        n_fft = shape(_A + "audio_feats_extractor.mel_trans.stft.conv_real.weight")[2]
        blocks = {}
        for k in sd:
            m = re.match(re.escape(_A) + r"layers\.(\d+)\.blocks\.(\d+)\.", k)
            if m:
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        if not blocks or sorted(blocks) != list(range(len(blocks))):
            raise CheckpointMismatch("no HTS-AT layers.N.blocks.M keys in the checkpoint (is it an ASE/HTS-AT model?)")
        depths = tuple(len(blocks[i]) for i in range(len(blocks)))
        heads = tuple(shape(f"{_A}layers.{i}.blocks.0.attn.relative_position_bias_table")[1] for i in blocks)
        window = int(round(shape(f"{_A}layers.0.blocks.0.attn.relative_position_index")[0] ** 0.5))
        spec = 256
        for i in blocks:  # a shifted block's mask has (grid / window)^2 windows
            key = f"{_A}layers.{i}.blocks.1.attn_mask"
            if key in sd:
                spec = int(round(shape(key)[0] ** 0.5)) * window * 2**i * patch
                break
        audio_args = (yaml_config or {}).get("audio_args", {})
        return cls(sample_rate=int(audio_args.get("sr", frontend.SAMPLE_RATE)),
                   hop_length=int(audio_args.get("hop_length", frontend.HOP_LENGTH)),
                   n_fft=n_fft, n_mels=n_mels, spec_size=spec, patch_size=patch, embed_dim=embed, depths=depths,
                   num_heads=heads, window_size=window, embed_size=shape("audio_proj.2.weight")[0])


def _projection(width: int, embed: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, embed), nn.ReLU(), nn.Linear(embed, embed))


class AseModel(nn.Module):
    """``encode_audio(waves)`` / ``encode_text(input_ids, attention_mask)`` -> L2-normalised embeddings."""

    def __init__(self, config: AseConfig, bert_config, tokenizer=None):
        super().__init__()
        from transformers import BertModel
        from transformers.models.clap.modeling_clap import ClapAudioEncoder

        self.config, self.tokenizer = config, tokenizer
        self.frontend = frontend.LogMel(config.n_fft, config.hop_length, config.n_mels)
        self.audio_encoder = ClapAudioEncoder(config.clap_audio_config())
        bert_config._attn_implementation = "eager"  # as the original (transformers 4.24) runs it
        self.text_encoder = BertModel(bert_config, add_pooling_layer=False)
        self.audio_proj = _projection(config.audio_width, config.embed_size)
        self.text_proj = _projection(bert_config.hidden_size, config.embed_size)
        self.temp = nn.Parameter(torch.tensor(0.07))  # trained, never used for retrieval

    @property
    def device(self) -> torch.device:
        return self.temp.device

    # ---------------------------------------------------------------- audio
    def load_audio(self, path) -> np.ndarray:
        """A file as the original loader gives it: mono, ``sample_rate`` (32 kHz), librosa kaiser_best."""
        return frontend.load_audio(path, self.config.sample_rate)

    def logmel(self, waves) -> torch.Tensor:
        waves = torch.as_tensor(np.asarray(waves, dtype=np.float32) if not torch.is_tensor(waves) else waves)
        return self.frontend(waves.to(self.device, torch.float32))

    @torch.no_grad()
    def swin_input(self, waves) -> torch.Tensor:
        """The image the Swin stages see, ``[B, 1, spec, spec]``: log-mel, bn0 (running stats, over mel
        bins), bicubic stretch to ``max_frames``, 4 time chunks stacked along the height (for inspection)."""
        enc = self.audio_encoder
        x = enc.batch_norm(self.logmel(waves).transpose(1, 3)).transpose(1, 3)
        return enc.reshape_mel2img(x)

    @torch.no_grad()
    def encode_audio(self, waves) -> torch.Tensor:
        """``[B, L]`` float32 waveforms (zero-padded as one batch) -> ``[B, embed_size]``.

        Raises ``ValueError`` for clips over ``config.max_samples`` (the original's assertion)."""
        mel = self.logmel(waves)
        if mel.shape[2] > self.config.max_frames:
            raise ValueError(f"clip of {mel.shape[2]} frames ({(mel.shape[2] - 1) * self.config.hop_length} samples) "
                             f"exceeds the model's {self.config.max_frames} frames (at most {self.config.max_samples} "
                             "samples); the original fails here too -- crop or window it (long_clips option)")
        feats = self.audio_encoder(mel).pooler_output
        return nn.functional.normalize(self.audio_proj(feats), dim=-1)

    # ----------------------------------------------------------------- text
    def tokenize(self, captions: list[str], preprocess: bool = True) -> dict:
        """The original's text path: ``text_preprocess`` then the tokenizer (longest padding, 30 tokens)."""
        if self.tokenizer is None:
            raise ValueError("this AseModel has no tokenizer (load it with load_ase(checkpoint, text_model_dir))")
        texts = [text_preprocess(c) for c in captions] if preprocess else list(captions)
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.config.text_max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    @torch.no_grad()
    def encode_text(self, input_ids, attention_mask) -> torch.Tensor:
        """Token ids ``[N, T]`` (token types all zero, as the original) -> ``[N, embed_size]`` from [CLS]."""
        out = self.text_encoder(input_ids=torch.as_tensor(input_ids).to(self.device),
                                attention_mask=torch.as_tensor(attention_mask).to(self.device))[0]
        return nn.functional.normalize(self.text_proj(out[:, 0, :]), dim=-1)

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        return self.encode_text(**self.tokenize(captions))

    # --------------------------------------------------------------- loading
    def derived_buffers(self) -> dict:
        """What the released DERIVED keys must hold for this model (``None`` where no buffer exists)."""
        out = {}
        for i, stage in enumerate(self.audio_encoder.layers):
            res = self.audio_encoder.input_resolutions[i]
            for j, block in enumerate(stage.blocks):
                block.set_shift_and_window_size(res)
                out[f"{_A}layers.{i}.blocks.{j}.attn_mask"] = block.get_attn_mask(*res, torch.float32, "cpu")
        n_pos = self.text_encoder.config.max_position_embeddings
        out["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(n_pos)[None]
        return {k: v for k, v in out.items() if v is not None}


def text_preprocess(sentence: str) -> str:
    """WavCaps ``text_preprocess``: lower-case, drop spaces before punctuation, punctuation -> space."""
    sentence = sentence.lower()
    sentence = re.sub(r'\s([,.!?;:"](?:\s|$))', r"\1", sentence).replace("  ", " ")
    return re.sub(r'[(,.!?;:|*")]', " ", sentence).replace("  ", " ")


def read_checkpoint(checkpoint) -> tuple[dict, dict | None]:
    """``(state_dict, yaml_config_or_None)`` from a path (``torch.load(weights_only=True)``) or a dict."""
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"ASE checkpoint not found: {path}")
        obj = _torch_load(path)
    else:
        obj = checkpoint
    if not isinstance(obj, dict):
        raise CheckpointMismatch(f"checkpoint {checkpoint!r}: expected a dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], dict):
        cfg = obj.get("config") if isinstance(obj.get("config"), dict) else None
        return obj["model"], cfg
    return obj, None


def _torch_load(path: Path):
    """weights_only load. WavCaps checkpoints may hold numpy scalars (``epoch``): those globals are
    allow-listed (as FusionAudio's script does), under numpy 2 and numpy 1 (``numpy.core``) names."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # pickle.UnpicklingError for a non-allow-listed global
        if "numpy" not in str(first):
            raise RuntimeError(f"cannot load checkpoint {path} with weights_only=True: {first}") from None
    scalar = np._core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
    safe = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, (np.dtype, "numpy.dtype")]
    safe += dtypes + [(d, f"numpy.dtypes.{d.__name__}") for d in dtypes]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"cannot load checkpoint {path} with weights_only=True: {e}") from None


def _check_yaml(cfg: dict | None) -> None:
    """A ``cp['config']`` (WavCaps train/pretrain save one) must describe an HTS-AT + BERT ASE."""
    if not cfg:
        return
    audio = cfg.get("audio_encoder_args", {})
    text = cfg.get("text_encoder_args", {})
    if audio and (audio.get("type"), str(audio.get("model", "")).lower()) != ("transformer", "htsat"):
        raise CheckpointMismatch(f"cp['config'] audio_encoder_args = {audio}: only the HTS-AT ASE is supported")
    if text and "bert" not in str(text.get("type", "")):
        raise CheckpointMismatch(f"cp['config'] text_encoder_args = {text}: only a BERT text encoder is supported")


def _bert_config(text_model_dir, sd: dict, yaml_cfg: dict | None = None):
    from transformers import BertConfig

    d = Path(text_model_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"text model directory {d} has no config.json (need a local bert-base-uncased)")
    check_ase_sizes(d, sd, yaml_cfg)  # before anything is built: the config's sizes must fit the checkpoint
    cfg = BertConfig.from_pretrained(str(d), local_files_only=True)
    vocab = sd.get("text_encoder.text_encoder.embeddings.word_embeddings.weight")
    if vocab is not None and tuple(vocab.shape) != (cfg.vocab_size, cfg.hidden_size):
        raise CheckpointMismatch(f"{d}/config.json says vocab {cfg.vocab_size} x hidden {cfg.hidden_size}; the "
                                 f"checkpoint's word embeddings are {tuple(vocab.shape)}")
    return cfg


def load_ase(checkpoint, text_model_dir, device: str = "cpu") -> AseModel:
    """The released FusionAudio-Retrieval / WavCaps ASE model, loaded strictly, in eval mode.

    ``checkpoint``: a path (``torch.load(weights_only=True)``; ``cp['model']`` is used when present) or
    the state dict itself. ``text_model_dir``: a local bert-base-uncased directory (config + vocab; its
    weights are not read -- the checkpoint holds the fine-tuned BERT).
    """
    from transformers import BertTokenizer

    sd, yaml_cfg = read_checkpoint(checkpoint)
    _check_yaml(yaml_cfg)
    config = AseConfig.from_state_dict(sd, yaml_cfg)
    bert_cfg = _bert_config(text_model_dir, sd, yaml_cfg)
    tokenizer = BertTokenizer.from_pretrained(str(text_model_dir), local_files_only=True)
    model = AseModel(config, bert_cfg, tokenizer)
    mapped, report = map_state_dict(sd, model.derived_buffers())
    load_strict(model, mapped)
    model.load_report = {**report, "n_released_keys": len(sd)}
    return model.to(device).eval()

