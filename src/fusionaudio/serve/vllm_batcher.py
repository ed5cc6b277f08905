"""``fusionaudio serve --engine vllm``: requests go to vLLM's async engine (``AsyncLLM``) as they arrive.

vLLM batches continuously (a request joins the running batch at the next step and leaves it when it
ends, so short answers never wait for long ones) on paged attention. :class:`VllmBatcher` has the
surface the API uses of :class:`~fusionaudio.serve.batcher.Batcher` (``submit`` -> a future of the
``Result``, ``preparing``, ``queued``, ``alive``, ``stats``, ``start``/``stop``), so the HTTP layer, its
limits and its errors are the same for both engines. Each request's tokens go through the same per-row
:class:`~fusionaudio.serve.backend.BatchWatcher` as with ``--engine hf`` (``max_tokens``, ``stop``
strings, streamed deltas, ``finish_reason``, token counts); when it stops a row, or the client hangs up
(its future is cancelled), the vLLM request is aborted and its slot freed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import nullcontext

import torch

from fusionaudio.gama.inference import Request
from fusionaudio.gama.vllm_options import vllm_sampling_params

from fusionaudio.serve.backend import BatchWatcher, Job, Result

log = logging.getLogger("fusionaudio.serve")


def _settle(fut: Future, result=None, error: BaseException | None = None) -> None:
    try:
        fut.set_exception(error) if error is not None else fut.set_result(result)
    except InvalidStateError:  # cancelled meanwhile (the client went away)
        pass


class VllmBatcher:
    """Drives ``backend.engine`` (a :class:`~fusionaudio.gama.vllm_engine.VllmGamaInference` made with
    ``serving=True``) on an event loop of its own; ``max_batch_size`` is vLLM's ``max_num_seqs``."""

    def __init__(self, backend, max_batch_size: int = 8):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.backend, self.engine, self.max_batch_size = backend, backend.engine, max_batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._llm = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="fusionaudio-audio")  # one clip at a time
        self._lock = threading.Lock()
        self._running = 0
        self.stats = {"engine": "vllm", "requests": 0, "failed": 0, "cancelled": 0, "running": 0,
                      "largest_batch": 0}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "VllmBatcher":
        """Start the loop thread and the engine; returns when the engine is ready (raises its start error)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="fusionaudio-vllm", daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._error is not None:
                raise self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._llm = self.engine.async_engine(max_num_seqs=self.max_batch_size)
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            self._llm.shutdown()
            loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None
        self._encoder.shutdown(wait=False)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def queued(self) -> int:
        """Requests in the engine now (vLLM queues and runs them itself)."""
        return self._running

    def preparing(self):
        return nullcontext()  # nothing to wait for: a request joins the running batch whenever it comes

    # -- requests -------------------------------------------------------------------------------
    def submit(self, job: Job) -> Future:
        """Start ``job``; the future resolves to its ``Result``. Cancelling the future aborts the request."""
        fut: Future = Future()
        if self._loop is None:
            fut.set_exception(RuntimeError("the vLLM engine is not running"))
            return fut
        task = asyncio.run_coroutine_threadsafe(self._answer(job, fut), self._loop)
        fut.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        return fut

    def _count(self, delta: int) -> int:
        with self._lock:
            self._running += delta
            self.stats["running"] = self._running
            self.stats["largest_batch"] = max(self.stats["largest_batch"], self._running)
            return self._running

    async def _answer(self, job: Job, fut: Future) -> None:
        concurrent = self._count(+1)
        try:
            result = await self._generate(job)
            result.batch_size = concurrent
            with self._lock:
                self.stats["requests"] += 1
            _settle(fut, result)
        except asyncio.CancelledError:
            with self._lock:
                self.stats["cancelled"] += 1
            raise
        except Exception as exc:  # noqa: BLE001 - the error of this request only
            with self._lock:
                self.stats["failed"] += 1
            log.warning("request failed: %s: %s", type(exc).__name__, exc)
            _settle(fut, error=exc)
        finally:
            self._count(-1)

    async def _generate(self, job: Job) -> Result:
        from vllm.sampling_params import RequestOutputKind

        loop = asyncio.get_running_loop()
        request = Request(job.question, job.features)
        embeds = (await loop.run_in_executor(self._encoder, self.engine.prompt_embeds, [request]))[0]
        s = job.settings
        opts = dict(do_sample=s.do_sample, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                    max_new_tokens=s.max_tokens)
        eos = self.engine.tokenizer.eos_token_id
        params = vllm_sampling_params(opts, eos, seed=s.seed if s.do_sample else None)
        params.output_kind = RequestOutputKind.DELTA
        watcher = BatchWatcher([job], self.engine.tokenizer, eos)
        row = watcher.rows[0]
        stream = self._llm.generate({"prompt_embeds": embeds}, params, f"chat-{uuid.uuid4().hex}",
                                    lora_request=self.engine.lora_request)
        finish = None
        try:
            async for out in stream:
                for token in out.outputs[0].token_ids:
                    if row.done:
                        break
                    watcher(torch.tensor([[token]]))
                finish = out.outputs[0].finish_reason
                if row.done:
                    break
        finally:
            await stream.aclose()  # aborts the request in vLLM when it is still running
        if not row.done and finish == "stop":  # vLLM stopped at EOS without handing it over
            row.done, row.reason, row.eos = True, "stop", True
        return watcher.results()[0]
