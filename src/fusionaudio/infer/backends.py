"""Model backends: turn a batch of records and their prepared audio into results.

A result is ``{"prediction": str, "error": None, "audio_info": {...} | None}`` or, for a record that
could not be answered (unusable audio, a prompt longer than the model's positions),
``{"prediction": None, "error": "<message naming the file / record and the problem>", "audio_info": None}``.
"""

from __future__ import annotations

import logging

from .loader import Prepared, fbanks_for
from .records import InferError, Item

log = logging.getLogger("fusionaudio.infer")

GEN_OPTIONS = ("do_sample", "num_beams", "temperature", "top_p", "top_k", "max_new_tokens", "min_new_tokens",
               "repetition_penalty")


def error_result(message: str) -> dict:
    return {"prediction": None, "error": message, "audio_info": None}


def generation_options(args) -> dict:
    """The effective generation options: the architecture's defaults overridden by the given ones."""
    given = {k: getattr(args, k, None) for k in GEN_OPTIONS}
    given = {k: v for k, v in given.items() if v is not None}
    if args.arch == "audsemthinker":
        from ..audsem.config import GENERATION_DEFAULTS as defaults
    else:
        from ..generation import GENERATION_DEFAULTS as defaults
    opts = {**defaults, **given}
    if opts["max_new_tokens"] < 1 or opts.get("num_beams", 1) < 1:
        raise InferError("--max_new_tokens and --num_beams must be >= 1")
    if opts.get("repetition_penalty") is not None and opts["repetition_penalty"] <= 0:
        raise InferError("--repetition_penalty must be > 0")
    return opts


class GamaBackend:
    """GAMA / FusionAudio: fbank of the batch on the model's device + :meth:`FusionAudioInference.generate`."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    def _text_input(self, item: Item):
        return None if self.ignore_input else item.record.get("input")

    def answer(self, batch: list[Item], prepared: list[Prepared]) -> list[dict]:
        from ..inference import Request

        audio_k = [k for k, p in enumerate(prepared) if p.error is None and p.audio is not None]
        fbanks = dict(zip(audio_k, fbanks_for([prepared[k] for k in audio_k], [batch[k].audio_path for k in audio_k],
                                              self.engine.device)))
        results: list[dict | None] = [None] * len(batch)
        requests, where = [], []
        for k, (item, prep) in enumerate(zip(batch, prepared)):
            if prep.error is not None:
                results[k] = error_result(prep.error)
                continue
            request = Request(item.record["instruction"], fbanks.get(k), self._text_input(item))
            problem = self.engine.check_length(request, self.gen["max_new_tokens"])
            if problem:
                results[k] = error_result(f"record {item.index}: {problem}")
                continue
            requests.append(request)
            where.append((k, prep.info))
        if requests:
            seed = None if self.seed is None else self.seed + batch[where[0][0]].index
            answers = self.engine.generate(requests, batch_size=len(requests), seed=seed, **self.gen)
            for (k, info), answer in zip(where, answers):
                results[k] = {"prediction": answer, "error": None, "audio_info": info}
        return results  # type: ignore[return-value]


class AudSemBackend:
    """AudSemThinker (Qwen2.5-Omni thinker): the loader's waveforms through its processor and
    ``generate``; a non-empty ``input`` is appended to the question."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    def answer(self, batch: list[Item], prepared: list[Prepared]) -> list[dict]:
        import torch

        results: list[dict | None] = [None] * len(batch)
        waves, prompts, where = [], [], []
        for k, (item, prep) in enumerate(zip(batch, prepared)):
            if prep.error is not None:
                results[k] = error_result(prep.error)
                continue
            question, extra = item.record["instruction"], item.record.get("input")
            if extra and not self.ignore_input:
                question = f"{question}\n{extra}"
            prompts.append(self.engine._prompt(question, prep.audio is not None))
            if prep.audio is not None:
                waves.append(prep.audio)
            where.append((k, prep.info))
        if prompts:
            engine, gen = self.engine, dict(self.gen)
            kwargs = engine._generation_kwargs(gen.pop("temperature"), gen.pop("top_p"), gen.pop("top_k"),
                                               gen.pop("max_new_tokens"), gen.pop("do_sample"),
                                               gen.pop("num_beams", 1), gen)
            if self.seed is not None:
                torch.manual_seed(self.seed + batch[where[0][0]].index)
            with torch.inference_mode():
                inputs = engine.processor(prompts, audio=waves or None, padding_side="left")
                inputs = {key: v.to(engine.device) for key, v in inputs.items()}
                if "input_features" in inputs:
                    inputs["input_features"] = inputs["input_features"].to(engine.dtype)
                generated = engine.model.generate(**inputs, **kwargs)
            new = engine.processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:])
            for (k, info), text in zip(where, new):
                results[k] = {"prediction": text.strip(), "error": None, "audio_info": info}
        return results  # type: ignore[return-value]


def prompt_key(args, item: Item) -> int:
    """A cheap measure of a record's prompt length (characters), to batch records of similar length."""
    extra = "" if args.ignore_input else (item.record.get("input") or "")
    return len(item.record["instruction"]) + len(extra)


def load_backend(args, device):
    from ..inference import create_inference

    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=args.dtype,
                              resampler=args.resampler, attention=args.attention,
                              check_values=not getattr(args, "no_check_values", False))
    if getattr(engine, "model_label", None):
        log.warning("no --base_model: using the %s", engine.model_label)
    if engine.arch == "audsemthinker":
        if args.prompt_mode is not None:
            engine.prompt_mode = args.prompt_mode
        return AudSemBackend(engine, generation_options(args), args.seed, args.ignore_input)
    return GamaBackend(engine, generation_options(args), args.seed, args.ignore_input)
