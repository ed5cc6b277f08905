"""CLAP dual encoder (audio, text) on stock transformers.

Interface (what ``fusionaudio.retrieval.evaluate`` needs from any dual encoder)::

    encoder.encode_text(list_of_str) -> (n, d) L2-normalised float32 array
    encoder.encode_audio(list_of_paths_or_waveforms) -> (m, d) L2-normalised float32 array

``ClapDualEncoder`` loads ``ClapModel`` + ``ClapProcessor`` from a **local directory** only
(``HF_HUB_OFFLINE=1``, ``local_files_only=True``); ``fusionaudio.retrieval.clap_train`` fine-tunes it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

def load_waveform(path: str, sampling_rate: int) -> np.ndarray:
    """Mono float32 waveform of an audio file, resampled (polyphase) to ``sampling_rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from None
    wav = data.mean(axis=1)
    if sr != sampling_rate:
        g = math.gcd(int(sr), int(sampling_rate))
        wav = resample_poly(wav, sampling_rate // g, sr // g).astype(np.float32)
    return wav

class ClapDualEncoder:
    """CLAP from a local directory (``ClapModel`` + ``ClapProcessor``)."""

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int = 16, model=None, processor=None):
        _offline()
        import torch
        from transformers import ClapModel, ClapProcessor

        if model is None or processor is None:
            if not Path(model_dir).is_dir():
                raise FileNotFoundError(f"CLAP model directory not found: {model_dir} (only local directories are loaded)")
            from fusionaudio.retrieval.sizes import check_clap_dir

            check_clap_dir(model_dir)  # names inside the directory, sizes that fit the weights: before building
            model = ClapModel.from_pretrained(str(model_dir), local_files_only=True)
            processor = ClapProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self.torch, self.model, self.processor = torch, model.to(device), processor
        self.device, self.batch_size = device, batch_size
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        max_pos = getattr(model.config.text_config, "max_position_embeddings", 514) - 2
        self.max_text_len = int(min(getattr(processor.tokenizer, "model_max_length", max_pos) or max_pos, max_pos))

    # ---------------------------------------------------------------- inputs
    def text_inputs(self, texts: list[str]) -> dict:
        enc = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_len,
                                       return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def audio_inputs(self, audio: list) -> dict:
        """Features clip by clip, each clip's random crop (when it is longer than the extractor's window) drawn
        from a generator seeded afresh, so a clip's embedding never depends on the clips batched with it (the
        pipeline's local and Ray engines batch differently). Under ``fusion`` truncation, as in the batched
        extractor, a batch with no long clip has one clip marked longer: the first, not a random one."""
        fe = self.processor.feature_extractor
        waves = [load_waveform(a, self.sampling_rate) if isinstance(a, (str, Path)) else np.asarray(a, np.float32)
                 for a in audio]
        parts = []
        for wave in waves:
            np.random.seed(0)
            parts.append(fe([wave], sampling_rate=self.sampling_rate, return_tensors="pt"))
        features = self.torch.cat([p["input_features"] for p in parts])
        out = {"input_features": features}
        if "is_longer" in parts[0]:
            longer = [len(w) > fe.nb_max_samples for w in waves]
            if getattr(fe, "truncation", None) == "fusion" and not any(longer):
                longer[0] = True
            out["is_longer"] = self.torch.tensor(longer).reshape(-1, 1)
        return {k: v.to(self.device) for k, v in out.items()}

    # -------------------------------------------------------------- encoding
    @staticmethod
    def _pooled(out):
        return out if hasattr(out, "dim") else out.pooler_output

    def _run(self, items, fn) -> np.ndarray:
        self.model.eval()
        chunks = []
        with self.torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                emb = self._pooled(fn(items[start : start + self.batch_size]))
                chunks.append(self.torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings."""
        return self._run(list(texts), lambda b: self.model.get_text_features(**self.text_inputs(b)))

    def encode_audio(self, audio: list) -> np.ndarray:
        """L2-normalised audio embeddings for file paths or 1-D waveforms at ``sampling_rate``."""
        return self._run(list(audio), lambda b: self.model.get_audio_features(**self.audio_inputs(b)))
