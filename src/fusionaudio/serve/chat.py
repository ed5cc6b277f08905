"""From a validated chat request to a :class:`~fusionaudio.serve.backend.Job`, and back to OpenAI JSON."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from fusionaudio.audio import AudioError
from fusionaudio.errors import UsageError
from fusionaudio.gama.generation import GENERATION_DEFAULTS
from fusionaudio.sampling import sampling_options

from fusionaudio.serve.audio_input import decode_audio, decode_base64
from fusionaudio.serve.backend import GenSettings, Job, Result
from fusionaudio.serve.errors import ApiError, bad_request
from fusionaudio.serve.schemas import AudioPart, ChatCompletionRequest, TextPart

MAX_STOP_SEQUENCES = 4  # as OpenAI


@dataclass
class Limits:
    max_audio_seconds: float = 60.0
    max_tokens: int = 1024  # the most new tokens one request may ask for (and the default)
    max_question_chars: int = 20000


def question_and_audio(req: ChatCompletionRequest) -> tuple[str, AudioPart | None, str | None]:
    """(question text, the audio part or None, its param path). One user turn, at most one clip."""
    for i, m in enumerate(req.messages):
        if m.role != "user":
            raise bad_request(f"messages[{i}]: role {m.role!r} is not supported; this model answers a single "
                              "user turn (text and at most one input_audio part)", param=f"messages[{i}].role")
    if len(req.messages) != 1:
        raise bad_request(f"messages: got {len(req.messages)} user messages; this model answers a single user turn",
                          param="messages")
    content = req.messages[0].content
    if content is None:
        raise bad_request("messages[0].content: missing", param="messages[0].content")
    if isinstance(content, str):
        texts, audio, audio_param = [content], [], None
    else:
        texts = [p.text for p in content if isinstance(p, TextPart)]
        audio = [(i, p) for i, p in enumerate(content) if isinstance(p, AudioPart)]
        if len(audio) > 1:
            raise bad_request(f"messages[0].content: {len(audio)} input_audio parts; at most one per request",
                              param="messages[0].content")
        audio_param = f"messages[0].content[{audio[0][0]}].input_audio.data" if audio else None
    question = "\n".join(t for t in texts if t.strip()).strip()
    if not question:
        raise bad_request("messages[0].content: no question text (add a text part)", param="messages[0].content")
    return question, (audio[0][1] if audio else None), audio_param


def gen_settings(req: ChatCompletionRequest, limits: Limits, defaults: dict | None = None) -> GenSettings:
    """Sampling settings under the one sampling rule (:mod:`fusionaudio.sampling`): the model family's
    defaults where omitted (GAMA's when ``defaults`` is None); ``temperature=0`` means greedy."""
    defaults = GENERATION_DEFAULTS if defaults is None else defaults
    if req.n != 1:
        raise bad_request(f"n: only n=1 is supported, got {req.n}", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (None, 0, 0.0):
            raise bad_request(f"{name}: not supported by this model (only 0)", param=name)
    if req.logprobs:
        raise bad_request("logprobs: not supported by this server", param="logprobs")
    if req.max_tokens is not None and req.max_completion_tokens is not None \
            and req.max_tokens != req.max_completion_tokens:
        raise bad_request("max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
    max_tokens = req.max_completion_tokens or req.max_tokens or min(GENERATION_DEFAULTS["max_new_tokens"],
                                                                    limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise bad_request(f"max_tokens: {max_tokens} is over this server's limit of {limits.max_tokens}",
                          param="max_tokens")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > MAX_STOP_SEQUENCES or any(not s for s in stop):
        raise bad_request(f"stop: up to {MAX_STOP_SEQUENCES} non-empty strings", param="stop")
    return settings_for(defaults, max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                        seed=req.seed, stop=stop)


def settings_for(defaults: dict, max_tokens: int, seed=None, stop=(), **sampling) -> GenSettings:
    """:class:`GenSettings` from the family's ``defaults`` and the given sampling fields (a bad value is a
    400 naming the field, with the same text as the command lines give)."""
    try:
        opts = sampling_options(defaults, max_new_tokens=max_tokens, **sampling)
    except UsageError as exc:
        field = next((name for name in sampling if str(exc).startswith(name)), None)
        raise bad_request(str(exc), param=field) from None
    return GenSettings(do_sample=opts["do_sample"], temperature=opts.get("temperature", 1.0),
                       top_p=opts.get("top_p", 1.0), top_k=opts.get("top_k", 0), max_tokens=max_tokens, seed=seed,
                       stop=tuple(stop))


def build_job(backend, req: ChatCompletionRequest, limits: Limits) -> Job:
    """Check and decode one request (CPU work: run it off the event loop). Raises ApiError (4xx)."""
    settings = gen_settings(req, limits, getattr(backend, "generation_defaults", None))
    question, part, param = question_and_audio(req)
    raw = decode_base64(part.input_audio.data, param) if part is not None else None
    return make_job(backend, question, raw, part.input_audio.format if part else None, settings, limits, param)


def make_job(backend, question: str, raw: bytes | None, fmt: str | None, settings: GenSettings, limits: Limits,
             param: str = "audio") -> Job:
    """A :class:`Job` from a question and encoded audio bytes (the API and the web demo both use this)."""
    if len(question) > limits.max_question_chars:
        raise bad_request(f"question is {len(question)} characters, over the limit of {limits.max_question_chars}",
                          param="messages[0].content", code="context_length_exceeded")
    audio = decode_audio(raw, fmt, param, limits.max_audio_seconds) if raw is not None else None
    try:
        job = backend.prepare(question, audio)
    except AudioError as exc:
        raise bad_request(f"{param}: {exc.problem}", param=param, code="invalid_audio") from exc
    if audio is not None:
        job.audio_info = {**(job.audio_info or {}), "sha256": audio.sha256, "format": audio.format}
    if job.prompt_tokens + settings.max_tokens > backend.context_length:
        raise bad_request(f"request too long: {job.prompt_tokens} prompt tokens + max_tokens {settings.max_tokens} "
                          f"exceed the model's context of {backend.context_length} tokens",
                          param="messages", code="context_length_exceeded")
    job.settings = settings
    return job


def server_error(exc: BaseException, what: str = "generation failed") -> ApiError:
    """The server's own failure (500, type ``server_error``): never a client's mistake, which is a 4xx."""
    return ApiError(500, f"{what}: {type(exc).__name__}: {exc}", type="server_error")


# ------------------------------------------------------------------------------------ responses
def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(job: Job, result: Result) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": job.prompt_tokens + result.completion_tokens}


def extension(backend, job: Job, result: Result) -> dict:
    """The ``fusionaudio`` field: audio info, batch size, and AudSemThinker's sections."""
    out = {"arch": backend.arch, "audio": job.audio_info, "batch_size": result.batch_size,
           "audio_tokens": backend.num_audio_tokens if job.has_audio else 0}
    if result.structured is not None:
        s = result.structured
        out["structured"] = {k: s.get(k) for k in ("think", "semantic_elements", "answer", "complete")}
        out["raw"] = result.raw
    return out


def completion(backend, model_id: str, job: Job, result: Result) -> dict:
    message = {"role": "assistant", "content": result.text, "refusal": None,
               "fusionaudio": extension(backend, job, result)}
    return {"id": new_id(), "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": usage(job, result)}


def chunk(cid: str, created: int, model_id: str, delta: dict | None, finish_reason: str | None = None,
          usage_: dict | None = None, extra: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
           "system_fingerprint": None, "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    if extra is not None:
        out["fusionaudio"] = extra
    return out
