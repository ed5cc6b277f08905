"""One config object for the GAMA / FusionAudio model, with named presets.

``GamaConfig`` nests one small dataclass per stage (audio encoder, Q-Former, aggregator,
LoRA) plus the Llama config as a plain dict, so that it serialises to one JSON object.
Presets are JSON files in ``fusionaudio/configs/`` (``gama-llama2-7b``, ``tiny``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Aggregator fusion modes. "reference" reproduces the released weights (the
#: cross-attention output is discarded); "cross_attention" feeds it to the feed-forward.
FUSION_MODES = ("reference", "cross_attention")


@dataclass
class AudioEncoderConfig:
    """CAV-MAE audio branch (ViT over 16x16 fbank patches)."""

    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    specific_depth: int = 11  # blocks_a ("modality-specific")
    unified_depth: int = 1  # blocks_u (run with the audio norms)
    patch_size: int = 16
    num_mel_bins: int = 128
    target_length: int = 1024
    layer_norm_eps: float = 1e-5
    pool_divisor: float = 50.0
    # Hidden states tapped after blocks_a[tap_j] and blocks_a[tap_k]; None means the
    # reference's int(2L/3) and int(L/3) with L = total depth.
    tap_j: int | None = None
    tap_k: int | None = None

    def __post_init__(self):
        depth = self.specific_depth + self.unified_depth
        if self.tap_j is None:
            self.tap_j = int(2 * depth / 3)
        if self.tap_k is None:
            self.tap_k = int(depth / 3)
        for name in ("tap_j", "tap_k"):
            if not 0 <= getattr(self, name) < self.specific_depth:
                raise ValueError(f"audio.{name}={getattr(self, name)} must index one of the {self.specific_depth} blocks_a")
        if self.num_mel_bins % self.patch_size or self.target_length % self.patch_size:
            raise ValueError("num_mel_bins and target_length must be multiples of patch_size")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (mel rows, time columns): 8 x 64 for the reference."""
        return self.num_mel_bins // self.patch_size, self.target_length // self.patch_size


@dataclass
class QFormerConfig:
    """BLIP-2 style Q-Former run on learned query tokens only."""

    num_query_tokens: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


@dataclass
class AggregatorConfig:
    """The two BERT layers of the "multi-layer aggregator" (hidden size = audio embed_dim)."""

    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    fusion: str = "reference"

    def __post_init__(self):
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"aggregator.fusion must be one of {FUSION_MODES}, got {self.fusion!r}")


@dataclass
class LoraSettings:
    """LoRA on the Llama attention projections (stock peft)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def _build(cls, value):
    if isinstance(value, cls):
        return value
    value = dict(value or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {unknown}")
    return cls(**value)


@dataclass
class GamaConfig:
    """Everything needed to build :class:`~fusionaudio.gama.modeling.GamaForCausalLM`."""

    llm: dict[str, Any]
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    name: str = "custom"

    def __post_init__(self):
        self.audio = _build(AudioEncoderConfig, self.audio)
        self.qformer = _build(QFormerConfig, self.qformer)
        self.aggregator = _build(AggregatorConfig, self.aggregator)
        if self.lora is not None:
            self.lora = _build(LoraSettings, self.lora)
        self.llm = dict(self.llm)
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key not in self.llm:
                raise ValueError(f"llm config lacks {key!r}")

    # -- derived sizes -------------------------------------------------------------
    @property
    def num_audio_tokens(self) -> int:
        """Q-Former queries + one aggregator token per time patch (32 + 64 = 96)."""
        return self.qformer.num_query_tokens + self.audio.grid[1]

    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    def llama_config(self):
        from transformers import LlamaConfig

        llm = {k: v for k, v in self.llm.items() if not (k == "rope_scaling" and v is None)}
        return LlamaConfig(**llm)

    # -- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GamaConfig":
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown GamaConfig field(s): {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "GamaConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GamaConfig":
        """A preset by name (``gama-llama2-7b``, ``tiny``); a dict override updates that
        section (``aggregator={"fusion": "cross_attention"}``), anything else replaces it."""
        path = PRESET_DIR / f"{name}.json"
        if not path.is_file():
            names = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
            raise ValueError(f"unknown model preset {name!r}; available: {names}")
        d = json.loads(path.read_text())
        for key, value in overrides.items():
            both_dicts = isinstance(value, dict) and isinstance(d.get(key), dict)
            d[key] = {**d[key], **value} if both_dicts else value
        return cls.from_dict(d)

    @classmethod
    def from_llama_config(cls, llama: dict[str, Any], audio_side: dict[str, Any] | None = None) -> "GamaConfig":
        """A reference base directory's config.json: plain Llama fields mean the
        gama-llama2-7b audio side; a ``fusionaudio`` section may describe other sizes."""
        llama = dict(llama)
        section = llama.pop("fusionaudio", None) if audio_side is None else audio_side
        if section is None:
            base = cls.from_name("gama-llama2-7b").to_dict()
            base.update(llm=llama, name="gama-llama2-7b")
            return cls.from_dict(base)
        section = dict(section)
        section["llm"] = llama
        return cls.from_dict(section)
