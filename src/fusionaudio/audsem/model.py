"""AudSemThinker inference: a local Qwen2.5-Omni *thinker* (text out, no talker) on stock transformers.

Loading accepts either a full Qwen2.5-Omni checkpoint directory (``config.json`` of model type
``qwen2_5_omni``, weights prefixed ``thinker.`` beside ``talker.`` / ``token2wav.``, which are skipped)
or a thinker-only directory (model type ``qwen2_5_omni_thinker``). Every thinker weight must be found
in the checkpoint; any unexpected weight other than the talker's / token2wav's is an error.

The prompt is the model's chat template applied to ``[system, user: [audio, instruction]]`` with the
AudSemThinker system prompt; audio is decoded with :mod:`fusionaudio.audio`, down-mixed to mono and
resampled to the feature extractor's rate (16 kHz).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fusionaudio.audio import AudioError, read_audio, resample
from fusionaudio.audsem.config import DEFAULT_PROMPT_MODE, GENERATION_DEFAULTS, SYSTEM_PROMPT, build_instruction
from fusionaudio.audsem.processor import OmniAudioProcessor
from fusionaudio.model.loading import resolve_dtype

logger = logging.getLogger(__name__)

__all__ = ["detect_arch", "load_thinker", "load_audio", "AudSemThinkerInference"]

_OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
TEXT_ONLY = (None, "", "empty")  # audio ids meaning "no audio" (the reference data uses "empty")
EXTRA_GENERATION_OPTIONS = ("min_new_tokens", "repetition_penalty")
_SKIPPED_PREFIXES = ("talker.", "token2wav.")


def _read_config(path) -> dict:
    from fusionaudio.tokenizer import TokenizerError, read_json_object, refuse_remote_code

    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: no config.json (expected a model directory)")
    try:
        config = read_json_object(cfg_file)
        refuse_remote_code(config, cfg_file)
    except TokenizerError as exc:  # same message, this module's error type
        raise ValueError(str(exc)) from None
    return config


def detect_arch(base_model_path) -> str:
    """``"audsemthinker"`` for a Qwen2.5-Omni (or thinker-only) directory, ``"gama"`` for a Llama one.

    Knows every layout this project writes: ``fusionaudio_config.json`` (the bundled demo model,
    ``fusionaudio convert`` output, GAMA training output) is GAMA; a ``config.json`` (reference base
    directories, ``fusionaudio export`` output, Qwen2.5-Omni checkpoints) is read for ``model_type``; a
    peft adapter directory (``fusionaudio.audsem.train`` output) follows its ``base_model_name_or_path``
    when that is a local directory. Anything else is a ``ValueError`` naming the directory.
    """
    path = Path(base_model_path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found")
    if (path / "fusionaudio_config.json").is_file():
        return "gama"
    if (path / "config.json").is_file():
        model_type = _read_config(path).get("model_type")
        if model_type in _OMNI_TYPES:
            return "audsemthinker"
        if model_type == "llama":
            return "gama"
        raise ValueError(
            f"{path / 'config.json'}: model_type {model_type!r} is neither a Qwen2.5-Omni "
            f"({', '.join(_OMNI_TYPES)}) nor a Llama (GAMA) checkpoint"
        )
    if (path / "adapter_config.json").is_file():
        from fusionaudio.tokenizer import read_json_object

        base = read_json_object(path / "adapter_config.json").get("base_model_name_or_path")
        if isinstance(base, str) and base and Path(base).is_dir() and Path(base).resolve() != path.resolve():
            return detect_arch(base)
        raise ValueError(f"{path}: a LoRA adapter directory, not a base model; pass it as --model_path and its "
                         f"base model as --base_model (or pass --arch)")
    raise ValueError(f"{path}: no config.json, fusionaudio_config.json or adapter_config.json; "
                     "cannot tell the architecture (pass --arch)")


def load_thinker(base_model_path, dtype=torch.float32, device="cpu"):
    """Load ``Qwen2_5OmniThinkerForConditionalGeneration`` from a full-Omni or thinker-only directory.

    Raises ``ValueError`` naming the directory when a thinker weight is missing, has the wrong shape, or
    an unexpected (non talker / token2wav) weight is present.
    """
    from transformers import AutoConfig, Qwen2_5OmniThinkerForConditionalGeneration

    path = Path(base_model_path)
    model_type = _read_config(path).get("model_type")
    if model_type not in _OMNI_TYPES:
        raise ValueError(f"{path}: model_type {model_type!r} is not a Qwen2.5-Omni checkpoint ({', '.join(_OMNI_TYPES)})")
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if model_type == "qwen2_5_omni":
        config = config.thinker_config
    if str(device) == "meta":  # the architecture only (no weights read): shapes, parameter counts, key layouts
        with torch.device("meta"):
            return Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=resolve_dtype(dtype)).eval()
    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, config=config, dtype=resolve_dtype(dtype), local_files_only=True, output_loading_info=True,
        trust_remote_code=False,
        device_map={"": str(torch.device(device))},
    )
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(_SKIPPED_PREFIXES)]
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing thinker weights: {sorted(info['missing_keys'])[:10]}")
    if info.get("mismatched_keys"):
        problems.append(f"shape mismatches: {list(info['mismatched_keys'])[:10]}")
    if unexpected:
        problems.append(f"unexpected weights: {sorted(unexpected)[:10]}")
    if problems:
        raise ValueError(f"{path}: checkpoint does not match the thinker config; " + "; ".join(problems))
    return model.to(device).eval()


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


class AudSemThinkerInference:
    """Generate AudSemThinker answers (``<think>``, ``<semantic_elements>``, ``<answer>``) for audio files.

    Args:
        base_model_path: local Qwen2.5-Omni directory (full Omni or thinker-only) with tokenizer,
            ``preprocessor_config.json`` and a chat template (e.g. a download of ``gijs/audsemthinker``).
        model_path: optional LoRA adapter directory (peft, e.g. written by ``fusionaudio.audsem.train``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: torch dtype or its name (``"bfloat16"`` on GPU halves memory; CPU wants float32).
        prompt_mode: ``"caption"`` (default; the structured captioning instruction, with
            ``" Question: ..."`` appended), ``"qa"`` (question-answering prefix + question) or ``"raw"``
            (the question alone), see :func:`fusionaudio.structured.build_instruction`.
        system_prompt: the system message (default: the one AudSemThinker was trained with).
        processor_path: where the tokenizer / feature extractor / template live (default: base_model_path).
        resampler: method passed to :func:`fusionaudio.audio.resample`: ``"sinc"`` (default; matches the
            model card's ``torchaudio.transforms.Resample``), ``"soxr"`` or ``"librosa"`` (upstream's
            evaluation scripts).
    """

    arch = "audsemthinker"

    def __init__(self, base_model_path, model_path=None, device="cpu", dtype=torch.float32, *,
                 prompt_mode: str = DEFAULT_PROMPT_MODE, system_prompt: str = SYSTEM_PROMPT,
                 processor_path=None, resampler: str = "sinc"):
        build_instruction("probe", prompt_mode)  # validates the mode early
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.prompt_mode = prompt_mode
        self.system_prompt = system_prompt
        self.resampler = check_resampler(resampler)
        self.base_model_path, self.model_path = str(base_model_path), None if model_path is None else str(model_path)
        self.processor = OmniAudioProcessor.from_pretrained(processor_path or base_model_path)
        model = load_thinker(base_model_path, dtype=self.dtype, device=self.device)
        if model_path is not None:
            model = _apply_adapter(model, model_path)
        self.model = model.eval()

    # ----------------------------------------------------------------------------------- prompting
    def instruction(self, question: str | None) -> str:
        """The user-turn text sent for ``question`` under this instance's prompt mode."""
        return build_instruction(question, self.prompt_mode)

    def _prompt(self, question: str | None, has_audio: bool) -> str:
        messages = build_conversation(self.instruction(question), has_audio, self.system_prompt)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    # ---------------------------------------------------------------------------------- generation
    def predict(self, audio_path, question: str | None = None, temperature: float = GENERATION_DEFAULTS["temperature"],
                top_p: float = GENERATION_DEFAULTS["top_p"], top_k: int = GENERATION_DEFAULTS["top_k"],
                max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
                do_sample: bool = GENERATION_DEFAULTS["do_sample"], num_beams: int = 1, seed: int | None = None,
                **extra) -> str:
        """Answer one request (``audio_path`` ``None`` / ``""`` / ``"empty"``: text only); returns the raw text
        with its three sections (use :func:`fusionaudio.structured.answer_text` for the answer alone)."""
        return self.predict_batch([audio_path], [question], temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=num_beams,
                                  seed=seed, **extra)[0]

    @torch.inference_mode()
    def predict_batch(self, audio_paths: Sequence, questions, batch_size: int = 8, seed: int | None = None,
                      temperature: float = GENERATION_DEFAULTS["temperature"], top_p: float = GENERATION_DEFAULTS["top_p"],
                      top_k: int = GENERATION_DEFAULTS["top_k"], max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
                      do_sample: bool = GENERATION_DEFAULTS["do_sample"], num_beams: int = 1, **extra) -> list[str]:
        """Answer many requests, left-padded into batches of ``batch_size``.

        ``questions`` is one string for every clip or a list as long as ``audio_paths``; entries of
        ``audio_paths`` may be ``None`` / ``""`` / ``"empty"`` (text only). Every file is decoded before any
        generation, and the first bad one raises :class:`fusionaudio.audio.AudioError` naming it. With
        ``do_sample`` the ``temperature`` / ``top_p`` / ``top_k`` apply and ``seed`` seeds torch's global
        generator. ``extra`` may hold ``min_new_tokens`` and ``repetition_penalty``.
        """
        audio_paths = list(audio_paths)
        if isinstance(questions, str) or questions is None:
            questions = [questions] * len(audio_paths)
        questions = list(questions)
        if len(questions) != len(audio_paths):
            raise ValueError(f"got {len(audio_paths)} audio paths but {len(questions)} questions")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gen_kwargs = self._generation_kwargs(temperature, top_p, top_k, max_new_tokens, do_sample, num_beams, extra)
        if not audio_paths:
            return []
        sr = self.processor.sampling_rate
        waves = [None if p in TEXT_ONLY else load_audio(p, sr, resampler=self.resampler) for p in audio_paths]
        prompts = [self._prompt(q, w is not None) for q, w in zip(questions, waves)]
        if seed is not None:
            torch.manual_seed(seed)
        outputs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            batch_prompts = prompts[start:start + batch_size]
            batch_waves = [w for w in waves[start:start + batch_size] if w is not None]
            inputs = self.processor(batch_prompts, audio=batch_waves or None, padding_side="left")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.dtype)
            generated = self.model.generate(**inputs, **gen_kwargs)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            outputs.extend(t.strip() for t in self.processor.batch_decode(new_tokens))
        return outputs

    def _generation_kwargs(self, temperature, top_p, top_k, max_new_tokens, do_sample, num_beams, extra) -> dict:
        unknown = set(extra) - set(EXTRA_GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation option(s): {sorted(unknown)}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tok = self.processor.tokenizer
        eos = [i for i in dict.fromkeys([tok.eos_token_id, tok.pad_token_id]) if i is not None]
        kwargs = dict(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), eos_token_id=eos,
                      pad_token_id=tok.pad_token_id, num_beams=int(num_beams))
        kwargs.update({k: v for k, v in extra.items() if v is not None})
        if do_sample:
            if temperature <= 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
            kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
        else:
            # Neutral values so that a checkpoint's sampling defaults do not trigger warnings under greedy.
            kwargs.update(temperature=1.0, top_p=1.0, top_k=50)
        return kwargs


def _apply_adapter(model, model_path):
    from fusionaudio.audsem.adapter import apply_adapter

    return apply_adapter(model, model_path)
