"""Adapters from the public inference objects to what a server needs per request.

A server needs more than ``generate(requests) -> list[str]``: token counts for ``usage``, a
``finish_reason``, per-request ``max_tokens`` and ``stop`` inside one batch, and text deltas for
streaming. :class:`GamaBackend` gets them with one ``StoppingCriteria`` that watches every row of
a batched generate (built from the inference object's public ``model``, ``tokenizer``,
``template`` and ``generation_config``). :class:`AudSemBackend` wraps
``AudSemThinkerInference.generate`` (answers arrive whole; the decoded audio never touches a file, and a
client-given path is never read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from fusionaudio.audio import AudioError, waveform_to_fbank
from fusionaudio.audsem.config import GENERATION_DEFAULTS as AUDSEM_DEFAULTS
from fusionaudio.gama.generation import GENERATION_DEFAULTS as GAMA_DEFAULTS
from fusionaudio.gama.prompts import build_prompt
from fusionaudio.structured import answer_text, parse_structured

from fusionaudio.serve.audio_input import DecodedAudio


@dataclass(frozen=True)
class GenSettings:
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Job:
    """One chat request, decoded and checked, waiting for the model."""

    question: str
    features: object = None  # GAMA: fbank [1024, 128]; AudSemThinker: (mono float32 array, rate)
    prompt_tokens: int = 0
    audio_info: dict | None = None
    settings: GenSettings | None = None  # set by the API from the request's sampling fields
    on_delta: Callable[[str], None] | None = None  # streaming: called with each new piece of text
    emitted: str = ""  # text already streamed (a retried job does not repeat it)
    cancelled: bool = False  # set (from the server's thread) when the client went away

    @property
    def has_audio(self) -> bool:
        return self.features is not None

    def cancel(self) -> None:
        """The client is gone: a running GAMA row stops at its next token (its batch slot is freed)."""
        self.cancelled = True


@dataclass
class Result:
    text: str  # what the client sees as message.content
    raw: str  # the model's whole output
    completion_tokens: int
    finish_reason: str  # "stop" | "length" ("cancelled": the client hung up; never sent)
    structured: dict | None = None
    batch_size: int = 1
    extra: dict = field(default_factory=dict)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that may still become a stop string (not streamed yet)."""
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return keep


class _Row:
    def __init__(self, job: Job):
        self.job, self.ids, self.done, self.reason, self.eos = job, [], False, "length", False


class BatchWatcher:
    """A per-row ``StoppingCriteria``: own ``max_tokens`` and ``stop`` strings, streaming deltas; a row whose
    client hung up (``job.cancelled``) is done at once, so a batch whose rows are all done stops."""

    def __init__(self, jobs: list[Job], tokenizer, eos_id: int):
        self.rows, self.tok, self.eos_id = [_Row(j) for j in jobs], tokenizer, eos_id

    def _text(self, row: _Row) -> tuple[str, bool]:
        text = self.tok.decode(row.ids, skip_special_tokens=True).lstrip()
        return _cut_at_stop(text, row.job.settings.stop)

    def _emit(self, row: _Row, final: bool) -> None:
        job = row.job
        if job.on_delta is None:
            return
        text, _ = self._text(row)
        if final:
            text = text.strip()
        else:
            text = text.rstrip().rstrip("\ufffd")  # trailing blanks / half a character may still change
            text = text[:len(text) - _held_back(text, job.settings.stop)]
        if text.startswith(job.emitted) and len(text) > len(job.emitted):
            delta, job.emitted = text[len(job.emitted):], text
            job.on_delta(delta)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last):
            if row.done:
                continue
            if row.job.cancelled:  # the client hung up: this row generates no more
                row.done, row.reason = True, "cancelled"
                continue
            if token == self.eos_id:
                row.done, row.reason, row.eos = True, "stop", True
                continue
            row.ids.append(token)
            _, stopped = self._text(row) if row.job.settings.stop else ("", False)
            if stopped:
                row.done, row.reason = True, "stop"
            elif len(row.ids) >= row.job.settings.max_tokens:
                row.done = True
            self._emit(row, final=False)
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)

    def results(self) -> list[Result]:
        out = []
        for row in self.rows:
            self._emit(row, final=True)
            text = self._text(row)[0].strip()
            out.append(Result(text, text, len(row.ids) + row.eos, row.reason, batch_size=len(self.rows)))
        return out


class GamaBackend:
    """GAMA / FusionAudio through :class:`fusionaudio.gama.inference.FusionAudioInference`."""

    arch = "gama"
    generation_defaults = GAMA_DEFAULTS

    def __init__(self, engine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.num_audio_tokens = int(engine.model.num_audio_tokens)
        self.context_length = int(engine.model.llm.config.max_position_embeddings)

    def prompt(self, question: str) -> str:
        return build_prompt(question, None, template=self.engine.template)

    def prepare(self, question: str, audio: DecodedAudio | None) -> Job:
        """Features and prompt size of one request; raises AudioError for unusable audio."""
        fbank = info = None
        if audio is not None:
            fbank, info = waveform_to_fbank(audio.waveform, audio.sample_rate, return_info=True)
            if not torch.isfinite(fbank).all():
                raise AudioError("audio gives non-finite features")
        prompt_tokens = len(self.tokenizer(self.prompt(question)).input_ids)
        prompt_tokens += self.num_audio_tokens if fbank is not None else 0
        return Job(question, fbank, prompt_tokens, None if info is None else info.api_dict())

    def batch_key(self, job: Job):
        """Jobs with equal keys share one generate; ``None``: the job runs alone (seeded sampling)."""
        s = job.settings
        if s.do_sample and s.seed is not None:
            return None
        return (job.has_audio, s.do_sample) + ((s.temperature, s.top_p, s.top_k) if s.do_sample else ())

    def run(self, jobs: list[Job]) -> list[Result]:
        """One batch of jobs (equal :meth:`batch_key`) through ``FusionAudioInference.generate``, the family's
        generation core; the watcher stops each row at its own ``max_tokens`` / ``stop`` and streams."""
        from fusionaudio.gama.inference import Request

        s = jobs[0].settings
        gen = dict(do_sample=s.do_sample, max_new_tokens=max(j.settings.max_tokens for j in jobs))
        if s.do_sample:
            gen.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        watcher = BatchWatcher(jobs, self.tokenizer, self.tokenizer.eos_token_id)
        seed = s.seed if s.do_sample else None
        self.engine.generate([Request(j.question, j.features) for j in jobs], batch_size=len(jobs), seed=seed,
                             stopping_criteria=watcher, row_max_new_tokens=[j.settings.max_tokens for j in jobs],
                             **gen)
        return watcher.results()


class AudSemBackend:
    """AudSemThinker through ``AudSemThinkerInference.generate``; structured sections parsed.

    ``generate`` returns text only, so ``completion_tokens`` is the answer re-tokenized (capped at
    ``max_tokens``) and ``finish_reason`` is "length" when that count reaches ``max_tokens``.
    """

    arch = "audsemthinker"
    generation_defaults = AUDSEM_DEFAULTS

    def __init__(self, engine):
        self.engine = engine
        self.tokenizer = engine.processor.tokenizer
        fe = engine.processor.feature_extractor
        # the model hears at most the feature extractor's window (and the evaluation code cuts at 30 s)
        self.model_audio_seconds = min(30.0, int(fe.n_samples) / int(fe.sampling_rate))
        self.num_audio_tokens = None
        self.context_length = int(getattr(engine.model.config.get_text_config(), "max_position_embeddings", 32768))

    def prepare(self, question: str, audio: DecodedAudio | None) -> Job:
        """The 16 kHz mono waveform the model hears (as ``predict_batch`` makes it from a file) and the prompt
        size; raises AudioError for unusable audio."""
        from fusionaudio.audsem.processor import waveform_to_mono

        features = info = None
        if audio is not None:
            wave = audio.waveform
            if not torch.isfinite(wave).all():
                raise AudioError("audio contains non-finite samples (NaN or inf)")
            features = waveform_to_mono(wave, audio.sample_rate, self.engine.processor.sampling_rate,
                                        resampler=self.engine.resampler)
            info = {"duration_s": round(audio.duration_s, 3), "channels": wave.shape[0],
                    "sample_rate": audio.sample_rate, "truncated": audio.duration_s > self.model_audio_seconds}
            info["summary"] = f"{audio.duration_s:.2f} s, {wave.shape[0]} ch, {audio.sample_rate} Hz" + (
                f", truncated to {self.model_audio_seconds:.2f} s" if info["truncated"] else "")
        prompt = self.engine.prompt(question, features is not None)
        if features is None:
            prompt_tokens = len(self.tokenizer(prompt).input_ids)
        else:
            prompt_tokens = int(self.engine.processor([prompt], audio=[features])["input_ids"].shape[1])
        return Job(question, features, prompt_tokens, info)

    def batch_key(self, job: Job):
        s = job.settings
        if s.do_sample and s.seed is not None:
            return None
        return (job.has_audio, s.do_sample, s.max_tokens) + ((s.temperature, s.top_p, s.top_k) if s.do_sample else ())

    def run(self, jobs: list[Job]) -> list[Result]:
        s = jobs[0].settings
        gen = dict(do_sample=s.do_sample, max_new_tokens=s.max_tokens)
        if s.do_sample:
            gen.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        raws = self.engine.generate([self.engine.prompt(j.question, j.has_audio) for j in jobs],
                                    [j.features for j in jobs], batch_size=len(jobs), seed=s.seed, **gen)
        results = []
        for job, raw in zip(jobs, raws):
            raw_cut, stopped = _cut_at_stop(raw, job.settings.stop)
            n = min(len(self.tokenizer(raw).input_ids), s.max_tokens)
            reason = "stop" if stopped or n < s.max_tokens else "length"  # approximate, see the class doc
            text = answer_text(raw_cut)
            if job.on_delta is not None and text:
                job.on_delta(text)
            results.append(Result(text, raw_cut, n, reason, parse_structured(raw_cut), batch_size=len(jobs)))
        return results


def make_backend(engine):
    """The adapter for an object made by :func:`fusionaudio.inference.create_inference`."""
    return AudSemBackend(engine) if getattr(engine, "arch", "gama") == "audsemthinker" else GamaBackend(engine)
