"""Answerers: turn a batch of records and their prepared audio into results, through each family's one
generation core (``FusionAudioInference.generate``, ``AudSemThinkerInference.generate``).

A result is ``{"prediction": str, "error": None, "audio_info": {...} | None}`` or, for a record that
could not be answered (unusable audio, a prompt longer than the model's positions),
``{"prediction": None, "error": "<message naming the file / record and the problem>", "audio_info": None}``.
"""

from __future__ import annotations

import logging

from fusionaudio.infer.loader import Prepared, fbanks_for
from fusionaudio.infer.records import Item
from fusionaudio.sampling import OPTIONS as GEN_OPTIONS
from fusionaudio.sampling import sampling_options

log = logging.getLogger("fusionaudio.infer")



def error_result(message: str) -> dict:
    return {"prediction": None, "error": message, "audio_info": None}


def generation_options(arch: str, args) -> dict:
    """The effective generation options (the one sampling rule): the family's defaults overridden by the flags
    (``--max_tokens`` is ``max_new_tokens``; ``--greedy`` and ``--temperature 0`` mean greedy)."""
    if arch == "audsemthinker":
        from fusionaudio.audsem.config import GENERATION_DEFAULTS as defaults
    else:
        from fusionaudio.gama.generation import GENERATION_DEFAULTS as defaults
    given = {k: getattr(args, k, None) for k in GEN_OPTIONS}
    if given.get("max_new_tokens") is None:
        given["max_new_tokens"] = getattr(args, "max_tokens", None)
    return sampling_options(defaults, greedy=bool(getattr(args, "greedy", False)), **given)


class GamaAnswerer:
    """GAMA / FusionAudio: fbank of the batch on the model's device + :meth:`FusionAudioInference.generate`."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    def _text_input(self, item: Item):
        return None if self.ignore_input else item.record.get("input")

    def answer(self, batch: list[Item], prepared: list[Prepared]) -> list[dict]:
        from fusionaudio.gama.inference import Request

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


class AudSemAnswerer:
    """AudSemThinker (Qwen2.5-Omni thinker): the loader's waveforms through its processor and
    ``generate``; a non-empty ``input`` is appended to the question."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    def answer(self, batch: list[Item], prepared: list[Prepared]) -> list[dict]:

        results: list[dict | None] = [None] * len(batch)
        waves, prompts, where = [], [], []
        for k, (item, prep) in enumerate(zip(batch, prepared)):
            if prep.error is not None:
                results[k] = error_result(prep.error)
                continue
            question, extra = item.record["instruction"], item.record.get("input")
            if extra and not self.ignore_input:
                question = f"{question}\n{extra}"
            prompts.append(self.engine.prompt(question, prep.audio is not None))
            waves.append(prep.audio)
            where.append((k, prep.info))
        if prompts:
            seed = None if self.seed is None else self.seed + batch[where[0][0]].index
            answers = self.engine.generate(prompts, waves, batch_size=len(prompts), seed=seed, **self.gen)
            for (k, info), text in zip(where, answers):
                results[k] = {"prediction": text, "error": None, "audio_info": info}
        return results  # type: ignore[return-value]


def prompt_key(args, item: Item) -> int:
    """A cheap measure of a record's prompt length (characters), to batch records of similar length."""
    extra = "" if args.ignore_input else (item.record.get("input") or "")
    return len(item.record["instruction"]) + len(extra)


def load_answerer(args, device):
    from fusionaudio.inference import create_inference

    engine_name = getattr(args, "engine", "hf")
    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=args.dtype,
                              resampler=args.resampler, attention=args.attention,
                              check_values=not getattr(args, "no_check_values", False),
                              quantize=getattr(args, "quantize", None), engine=engine_name,
                              engine_options=None if engine_name == "hf" else {"vllm_args": args.vllm_args,
                                                                                "lora": args.vllm_lora})
    if getattr(engine, "model_label", None):
        log.warning("no --base_model: using the %s", engine.model_label)
    if engine.arch == "audsemthinker":
        if args.prompt_mode is not None:
            engine.prompt_mode = args.prompt_mode
        return AudSemAnswerer(engine, generation_options(engine.arch, args), args.seed, args.ignore_input)
    return GamaAnswerer(engine, generation_options(engine.arch, args), args.seed, args.ignore_input)
