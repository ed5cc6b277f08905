"""The audio + text part of ``Qwen2_5OmniProcessor``, usable without torchvision.

transformers 5.23's ``Qwen2_5OmniProcessor`` insists on a video processor, which needs torchvision
(absent from this project's pinned CPU environment). This class performs exactly the steps the stock
processor performs for text and audio, from the same checkpoint files (``tests/test_audsem.py`` checks
the tensors against the stock processor):

1. render the checkpoint's chat template (``chat_template.json`` / ``chat_template.jinja`` /
   the tokenizer's template) over the messages;
2. run the WhisperFeatureExtractor from ``preprocessor_config.json`` with ``padding="max_length"`` and an
   attention mask (renamed ``feature_attention_mask``);
3. expand each ``<|AUDIO|>`` placeholder, in order, into ``((L - 1) // 2 + 1 - 2) // 2 + 1`` audio tokens
   where ``L`` is the clip's number of feature frames;
4. tokenize with padding (left by default, for generation).

User text never becomes control tokens (a deliberate deviation from the stock processor, which turns a
literal ``<|im_end|>`` or ``<|AUDIO|>`` typed in a question or answer into the control id): user strings
are marked with transformers' ``mark_control_tokens`` before the template is rendered, and the rendered
text is encoded with ``encode_marked_chat``, so only the template's own control tokens are control ids.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from transformers.utils import chat_template_utils as _chat

from fusionaudio.audio import AudioError, read_audio, resample
from fusionaudio.audsem.config import SYSTEM_PROMPT

logger = logging.getLogger(__name__)

__all__ = ["OmniAudioProcessor", "audio_token_count"]

#: A user string marked by ``mark_control_tokens`` (kept as text).
_MARKED = re.compile(f"({re.escape(_chat._CONTROL_TOKEN_START)}.*?{re.escape(_chat._CONTROL_TOKEN_END)})", re.S)


def audio_token_count(num_frames: torch.Tensor) -> torch.Tensor:
    """Number of audio tokens the Qwen2.5-Omni audio encoder emits for ``num_frames`` feature frames."""
    after_conv = (num_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


class OmniAudioProcessor:
    """Tokenizer + WhisperFeatureExtractor + chat template of a Qwen2.5-Omni checkpoint (no image/video)."""

    def __init__(self, tokenizer, feature_extractor, chat_template: str):
        for name in ("audio_token", "audio_bos_token", "audio_eos_token"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(f"tokenizer has no {name}; it is not a Qwen2.5-Omni tokenizer")
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.chat_template = chat_template
        self.audio_token = tokenizer.audio_token

    @classmethod
    def from_pretrained(cls, path) -> "OmniAudioProcessor":
        """Load from a local checkpoint directory (never the network)."""
        from transformers import AutoTokenizer, WhisperFeatureExtractor

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: processor directory not found")
        from fusionaudio.loading.files import check_named_files, read_json_file, refuse_remote_code

        configs = {}
        for name in ("tokenizer_config.json", "config.json", "processor_config.json", "preprocessor_config.json"):
            if (path / name).is_file() or (path / name).is_symlink():
                configs[name] = read_json_file(path / name, name)
                refuse_remote_code(configs[name], path / name)
                check_named_files(configs[name], path, path / name)  # every file it names stays inside
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        proc_cfg = configs.get("processor_config.json", {})
        if "preprocessor_config.json" in configs:
            fe_cfg = configs["preprocessor_config.json"]
        elif isinstance(proc_cfg.get("feature_extractor"), dict):
            fe_cfg = proc_cfg["feature_extractor"]
        else:
            raise FileNotFoundError(f"{path}: no preprocessor_config.json (the audio feature extractor settings)")
        fe_type = fe_cfg.get("feature_extractor_type", "WhisperFeatureExtractor")
        if fe_type != "WhisperFeatureExtractor":
            raise ValueError(f"{path}: feature extractor {fe_type!r} is not the WhisperFeatureExtractor Qwen2.5-Omni uses")
        fe_cfg = {k: v for k, v in fe_cfg.items() if k not in ("feature_extractor_type", "processor_class")}
        feature_extractor = WhisperFeatureExtractor(**fe_cfg)
        return cls(tokenizer, feature_extractor, _find_chat_template(path, proc_cfg, tokenizer))

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def _control_re(self) -> re.Pattern:
        return _chat._get_control_token_patterns(tuple(self.tokenizer.added_tokens_encoder))[0]

    def mark_user_text(self, obj):
        """``obj`` (a string or messages) with its control-token strings marked as plain text."""
        return _chat.mark_control_tokens(obj, self._control_re())

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render one conversation (list of ``{"role", "content"}``) to prompt text; control tokens
        inside the messages are marked so that :meth:`encode` keeps them as text."""
        return self.tokenizer.apply_chat_template(
            self.mark_user_text(messages), chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered (marked) text: the template's control tokens as ids, marked user
        text as text. Without markers this is ``tokenizer(text, add_special_tokens=False)``."""
        return _chat.encode_marked_chat(self.tokenizer, text)

    def encode_user_text(self, text: str) -> list[int]:
        """Token ids of raw user text (e.g. a training answer), never a control token."""
        return self.encode(self.mark_user_text(text)) if text else []

    def audio_features(self, audio: list) -> dict:
        """Log-mel features ``[N, 128, frames]``, their frame mask and the audio-token count per clip.

        Like the stock processor, features are padded to the extractor's window (``n_samples``) and longer
        clips are truncated to it (logged as a warning).
        """
        window = int(self.feature_extractor.n_samples)
        if any(len(a) > window for a in audio):
            logger.warning("audio longer than the feature extractor's %.1f s window is truncated to it",
                           window / self.sampling_rate)
        feats = self.feature_extractor(
            audio, sampling_rate=self.sampling_rate, return_attention_mask=True, padding="max_length",
            return_tensors="pt",
        )
        mask = feats["attention_mask"]
        return {
            "input_features": feats["input_features"],
            "feature_attention_mask": mask,
            "num_audio_tokens": audio_token_count(mask.sum(-1)),
        }

    def count_placeholders(self, texts: list[str]) -> int:
        """``<|AUDIO|>`` placeholders written by the template (not those the user typed, which are marked)."""
        return sum(c.count(self.audio_token) for t in texts for c in _MARKED.split(t)[0::2])

    def expand_audio_tokens(self, texts: list[str], num_audio_tokens) -> list[str]:
        """Replace the ``<|AUDIO|>`` placeholders, in reading order, by one token per audio frame group."""
        counts = [int(n) for n in num_audio_tokens]
        chunks = [_MARKED.split(t) for t in texts]
        found = self.count_placeholders(texts)
        if found != len(counts):
            raise ValueError(f"{found} {self.audio_token} placeholders in the text but {len(counts)} audio clips")
        it = iter(counts)
        out = []
        for parts in chunks:
            for j in range(0, len(parts), 2):
                pieces = parts[j].split(self.audio_token)
                parts[j] = pieces[0] + "".join(self.audio_token * next(it) + piece for piece in pieces[1:])
            out.append("".join(parts))
        return out

    def __call__(self, texts: list[str], audio: list | None = None, padding_side: str = "left") -> dict:
        """Tensors for the thinker: ``input_ids``, ``attention_mask`` and, with audio,
        ``input_features`` / ``feature_attention_mask``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        data: dict = {}
        if audio:
            feats = self.audio_features(list(audio))
            texts = self.expand_audio_tokens(texts, feats.pop("num_audio_tokens"))
            data.update(feats)
        elif self.count_placeholders(texts):
            raise ValueError(f"{self.audio_token} placeholder in the text but no audio given")
        ids = [self.encode(t) for t in texts]
        width = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id
        data["input_ids"] = torch.full((len(ids), width), pad, dtype=torch.long)
        data["attention_mask"] = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            cols = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
            data["input_ids"][row, cols] = torch.tensor(seq, dtype=torch.long)
            data["attention_mask"][row, cols] = 1
        return data

    def batch_decode(self, token_ids) -> list[str]:
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _find_chat_template(path: Path, proc_cfg: dict, tokenizer) -> str:
    if isinstance(proc_cfg.get("chat_template"), str):
        return proc_cfg["chat_template"]
    from fusionaudio.loading.files import check_path, read_json_file

    json_file = path / "chat_template.json"
    if json_file.is_file() or json_file.is_symlink():
        template = read_json_file(json_file, "chat template").get("chat_template")
        if isinstance(template, str):
            return template
        raise ValueError(f"{json_file}: no 'chat_template' string inside")
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file() or jinja_file.is_symlink():
        return check_path(jinja_file, "chat template").read_text()
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        return tokenizer.chat_template
    raise FileNotFoundError(
        f"{path}: no chat template (looked for processor_config.json, chat_template.json, chat_template.jinja "
        "and the tokenizer's template)"
    )


RESAMPLERS = ("sinc", "soxr", "librosa")  # sinc = the model card's torchaudio.transforms.Resample


def check_resampler(resampler: str) -> str:
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    return resampler


def load_audio(path, sampling_rate: int, min_seconds: float = 1.0, max_seconds: float | None = 30.0,
               resampler: str = "sinc") -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sampling_rate``.

    Channels are averaged; clips shorter than ``min_seconds`` are zero-padded to it and clips longer
    than ``max_seconds`` are cut (the public AudSemThinker evaluation code does both, with 1 s and 30 s).
    Raises :class:`fusionaudio.audio.AudioError` naming the file for missing, undecodable or empty audio.
    """
    wave, sr = read_audio(path)
    return waveform_to_mono(wave, sr, sampling_rate, min_seconds, max_seconds, resampler, path)


def waveform_to_mono(wave, sr: int, sampling_rate: int, min_seconds: float = 1.0,
                     max_seconds: float | None = 30.0, resampler: str = "sinc", path=None) -> np.ndarray:
    """:func:`load_audio` for an already decoded ``[channels, samples]`` waveform."""
    if wave.numel() == 0 or wave.shape[-1] == 0:
        raise AudioError("no audio samples", path)
    if not torch.isfinite(wave).all():
        raise AudioError("audio contains NaN or infinite samples", path)
    mono = wave.mean(dim=0, keepdim=True)
    mono = resample(mono, sr, sampling_rate, method=resampler)[0].numpy().astype(np.float32)
    if max_seconds is not None and mono.shape[0] > int(max_seconds * sampling_rate):
        logger.warning("%s: %.1f s of audio cut to the first %.1f s", path, mono.shape[0] / sampling_rate, max_seconds)
        mono = mono[: int(max_seconds * sampling_rate)]
    if mono.shape[0] < int(min_seconds * sampling_rate):
        mono = np.pad(mono, (0, int(min_seconds * sampling_rate) - mono.shape[0]))
    return mono


def build_conversation(instruction: str, has_audio: bool, system_prompt: str = SYSTEM_PROMPT,
                       completion: str | None = None) -> list[dict]:
    """The chat messages AudSemThinker is prompted (and trained) with."""
    user = ([{"type": "audio"}] if has_audio else []) + [{"type": "text", "text": instruction}]
    messages = [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": user},
    ]
    if completion is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": completion}]})
    return messages
