"""The OpenAI-compatible HTTP API: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

Bodies are read by hand (with a size limit) and validated with :mod:`.schemas`, so every
problem - too large, not JSON, a wrong field type, bad base64, undecodable or NaN audio, an
unknown model, a too-long request - is a 4xx with an OpenAI-style ``{"error": {...}}`` body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from fusionaudio.serve import chat
from fusionaudio.serve.batcher import Batcher
from fusionaudio.serve.errors import ApiError, bad_request
from fusionaudio.serve.schemas import MAX_JSON_DEPTH, ChatCompletionRequest, json_problem

log = logging.getLogger("fusionaudio.serve")
_DONE = object()


@dataclass
class ServeConfig:
    model_id: str = "fusionaudio-demo"
    api_key: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_size: int = 8
    max_wait_ms: float = 50.0
    min_wait_ms: float = 20.0
    limits: chat.Limits = field(default_factory=chat.Limits)


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return bad_request(f"{loc}: {first['msg']}{more}", param=loc, code="invalid_type")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes, over the limit of {limit}", code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
    return bytes(body)


def _parse(body: bytes) -> ChatCompletionRequest:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not valid JSON ({exc})", code="invalid_json") from exc
    except RecursionError:  # nested deeper than the parser's stack: a client error, not the server's
        raise bad_request(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request(f"body must be a JSON object, got {type(obj).__name__}", code="invalid_type")
    problem = json_problem(obj)  # too deep, or text that is not valid Unicode (a lone surrogate)
    if problem:
        raise bad_request(problem[0], param=problem[1], code="invalid_json" if problem[1] is None else "invalid_value")
    try:
        return ChatCompletionRequest.model_validate(obj)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        if exc.status < 500:  # a client's mistake: one line, no traceback
            log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.message[:300])
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(ApiError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):
        log.exception("unexpected error")  # the server's own failure: 500, with the traceback in the log
        return _error_response(chat.server_error(exc, "internal error"))


def _check_key(api_key: str | None, request: Request) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), api_key.encode())):
        raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


async def _stream(backend, model_id: str, job, fut, pieces: asyncio.Queue, include_usage: bool):
    """Server-sent events as OpenAI sends them: role, content deltas, finish, [usage], [DONE]."""
    cid, created = chat.new_id(), int(time.time())

    def event(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    finished = False
    try:
        yield event(chat.chunk(cid, created, model_id, {"role": "assistant", "content": ""}))
        while (piece := await pieces.get()) is not _DONE:
            yield event(chat.chunk(cid, created, model_id, {"content": piece}))
        if fut.exception() is not None:
            yield event(chat.server_error(fut.exception()).body())
        else:
            result = fut.result()
            yield event(chat.chunk(cid, created, model_id, {}, result.finish_reason,
                                   extra=chat.extension(backend, job, result)))
            if include_usage:
                yield event(chat.chunk(cid, created, model_id, None, usage_=chat.usage(job, result)))
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:  # the client hung up (or the stream was cancelled): stop generating for it
            job.cancel()
            fut.cancel()  # still queued: the batcher skips it; running: the row stops at its next token


async def _cancel_on_hang_up(events, fut):
    """Cancel the request's future when the stream ends before its answer did (the client hung up): a queued
    job is dropped, and a vLLM request is aborted (its slot freed)."""
    try:
        async for event in events:
            yield event
    finally:
        if not fut.done():
            fut.cancel()


def create_app(backend, config: ServeConfig | None = None, batcher: Batcher | None = None) -> FastAPI:
    """The API app for ``backend`` (see :func:`fusionaudio.serve.backend.make_backend`)."""
    config = config or ServeConfig()
    batcher = batcher or Batcher(backend, config.max_batch_size, config.max_wait_ms / 1000,
                                  config.min_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="FusionAudio", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.batcher, app.state.backend, app.state.config = batcher, backend, config

    _install_error_handlers(app)

    def check_key(request: Request) -> None:
        _check_key(config.api_key, request)

    @app.get("/health")
    async def health():
        return {"status": "ok" if batcher.alive else "stopped", "model": config.model_id, "arch": backend.arch,
                "queued": batcher.queued(), "batching": {"max_batch_size": batcher.max_batch_size,
                                                         "max_wait_ms": config.max_wait_ms,
                                                         "min_wait_ms": config.min_wait_ms, **batcher.stats}}

    def model_card() -> dict:
        return {"id": config.model_id, "object": "model", "created": 0, "owned_by": "fusionaudio"}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        check_key(request)
        if model_id != config.model_id:
            raise ApiError(404, f"model {model_id!r} does not exist; this server serves {config.model_id!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        with batcher.preparing():  # submitted inside: the worker waits for it rather than start without it
            req = _parse(await _read_body(request, config.max_body_bytes))
            if req.model != config.model_id:
                raise ApiError(404, f"model {req.model!r} does not exist; this server serves {config.model_id!r}",
                               param="model", code="model_not_found")
            job = await run_in_threadpool(chat.build_job, backend, req, config.limits)
            if req.stream:
                job.on_delta = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
            fut = batcher.submit(job)
        if req.stream:
            fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, _DONE))
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _stream(backend, config.model_id, job, fut, pieces, include_usage)
            return StreamingResponse(_cancel_on_hang_up(events, fut), media_type="text/event-stream")
        try:
            result = await asyncio.wrap_future(fut)
        except Exception as exc:  # noqa: BLE001 - the error of this request only
            raise chat.server_error(exc) from exc
        return chat.completion(backend, config.model_id, job, result)

    return app
