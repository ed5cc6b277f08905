"""``FusionAudioInference``: load once, answer questions about audio files, batched.

The audio of each request is encoded once and carried through decoding by the KV cache;
requests are batched with left padding (greedy batches give the same tokens as the same
requests one at a time). The response is the decoded new tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import AudioInfo, load_fbank
from .model.loading import load_model, resolve_dtype
from .prompts import build_prompt

log = logging.getLogger("fusionaudio.inference")

#: The reference's sampling defaults.
GENERATION_DEFAULTS = dict(temperature=0.1, top_p=0.95, top_k=300, max_new_tokens=1024, do_sample=True, num_beams=1)
#: Further options passed through to transformers' GenerationConfig when given.
EXTRA_GENERATION_OPTIONS = ("min_new_tokens", "repetition_penalty")
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "demo_model"
TEXT_ONLY = (None, "", "empty")  # the reference's audio_id for text-only requests is "empty"


def default_model() -> tuple[Path, str]:
    """(directory, label) of the model used when no ``base_model`` is given: the bundled demo."""
    if not (DEMO_MODEL_DIR / "fusionaudio_config.json").is_file():
        raise FileNotFoundError(f"{DEMO_MODEL_DIR}: the bundled demo model is missing; pass --base_model "
                                "(or rebuild it with scripts/train/make_demo_model.sh)")
    return DEMO_MODEL_DIR, "bundled demo model (tiny, trained on synthetic sound scenes)"


def resolve_device(device: str | torch.device | None) -> tuple[torch.device, str | None]:
    """(device, note): a CUDA request on a machine without CUDA falls back to CPU with a note."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu"), f"CUDA is not available, using CPU instead of {device}"
    return device, None


@dataclass
class Request:
    question: str
    fbank: torch.Tensor | None = None  # [1024, 128]
    input: str | None = None


class FusionAudioInference:
    """GAMA / FusionAudio inference: ``predict(audio_path, question)`` and ``predict_batch``."""

    arch = "gama"

    def __init__(self, base_model_path=None, model_path=None, device="cpu", dtype="float32",
                 template: str = "alpaca_short"):
        self.device, note = resolve_device(device)
        if note:
            log.warning(note)
        self.model_label = None
        if base_model_path is None:
            base_model_path, self.model_label = default_model()
            if model_path is not None:
                raise ValueError("--model_path needs --base_model (the directory it was fine-tuned from)")
        self.base_model_path, self.model_path = str(base_model_path), model_path
        self.model, self.tokenizer = load_model(base_model_path, model_path, device=self.device, dtype=resolve_dtype(dtype))
        self.template = template

    # -- audio --------------------------------------------------------------------------
    @staticmethod
    def load_audio(audio_path) -> tuple[torch.Tensor | None, AudioInfo | None]:
        """(fbank [1024, 128], info), or (None, None) for a text-only request."""
        if audio_path in TEXT_ONLY:
            return None, None
        return load_fbank(audio_path, return_info=True)

    # -- generation -----------------------------------------------------------------------
    def generation_config(self, **overrides):
        from transformers import GenerationConfig

        opts = {**GENERATION_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(opts) - set(GENERATION_DEFAULTS) - set(EXTRA_GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation option(s): {sorted(unknown)}")
        if not opts["do_sample"]:
            for key in ("temperature", "top_p", "top_k"):
                opts.pop(key)
        tok = self.tokenizer
        return GenerationConfig(**opts, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)

    @torch.no_grad()
    def generate(self, requests: list[Request], batch_size: int = 8, seed: int | None = None, **gen) -> list[str]:
        """Answer prepared requests, batched; results come back in request order."""
        config = self.generation_config(**gen)
        if seed is not None:
            torch.manual_seed(seed)
        answers: list[str | None] = [None] * len(requests)
        # Requests with and without audio have different prefix lengths: batch them apart.
        for with_audio in (True, False):
            idx = [i for i, r in enumerate(requests) if (r.fbank is not None) == with_audio]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                for i, text in zip(chunk, self._generate_chunk([requests[i] for i in chunk], config)):
                    answers[i] = text
        return answers  # type: ignore[return-value]

    def _generate_chunk(self, chunk: list[Request], config) -> list[str]:
        prompts = [build_prompt(r.question, r.input, template=self.template) for r in chunk]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        audio = torch.stack([r.fbank for r in chunk]) if chunk[0].fbank is not None else None
        new = self.model.generate(enc.input_ids, enc.attention_mask, audio, generation_config=config)
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def predict(self, audio_path, question: str, temperature=0.1, top_p=0.95, top_k=300,
                max_new_tokens=1024, do_sample=True, num_beams=1, seed=None) -> str:
        """Answer one question about one audio file (``None``/"empty": text only)."""
        return self.predict_batch([audio_path], question, temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=num_beams,
                                  seed=seed)[0]

    def predict_batch(self, audio_paths, questions, batch_size: int = 8, seed=None, **gen) -> list[str]:
        """Answer ``questions`` (one string for all, or one per path) about ``audio_paths``."""
        audio_paths = list(audio_paths)
        if isinstance(questions, str):
            questions = [questions] * len(audio_paths)
        if len(questions) != len(audio_paths):
            raise ValueError(f"{len(questions)} questions for {len(audio_paths)} audio paths")
        requests = [Request(q, self.load_audio(p)[0]) for p, q in zip(audio_paths, questions)]
        return self.generate(requests, batch_size=batch_size, seed=seed, **gen)


def create_inference(arch: str = "auto", base_model_path=None, model_path=None, device="cpu", dtype="float32"):
    """An inference object for either model family (``gama`` or ``audsemthinker``)."""
    if arch == "auto":
        arch = "gama"
        if base_model_path is not None:
            from .audsem import detect_arch

            arch = detect_arch(base_model_path)
    if arch == "gama":
        return FusionAudioInference(base_model_path, model_path, device=device, dtype=dtype)
    if arch == "audsemthinker":
        if base_model_path is None:
            raise ValueError("--arch audsemthinker needs --base_model (a local Qwen2.5-Omni directory)")
        from .audsem import AudSemThinkerInference

        return AudSemThinkerInference(base_model_path, model_path, device=device, dtype=dtype)
    raise ValueError(f"unknown arch {arch!r}: use auto, gama or audsemthinker")
