"""Dynamic batching: requests that arrive while the model is busy share one batched generate.

One worker thread owns the model. It takes the first waiting job, then gathers more while other
requests are still being decoded (announced with :meth:`Batcher.preparing`) or already queued, for
at most ``max_wait_s`` (or until ``max_batch_size``), and in any case for ``min_wait_s`` (default 0:
a lone request starts at once). It groups
compatible jobs (the backend's
``batch_key``: same kind of input and sampling settings) and runs each group as one generate.
Under greedy decoding every answer equals the same request run alone (left padding, rows
independent). If a batched generate raises, its jobs are retried one by one so that only the
job that really fails gets the error; the worker itself never stops on an error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager

log = logging.getLogger("fusionaudio.serve")

_STOP = object()


class Batcher:
    def __init__(self, backend, max_batch_size: int = 8, max_wait_s: float = 0.05, min_wait_s: float = 0.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if not 0 <= min_wait_s <= max_wait_s:
            raise ValueError(f"min_wait_s must be in [0, max_wait_s], got {min_wait_s}")
        self.backend, self.max_batch_size, self.max_wait_s = backend, max_batch_size, max_wait_s
        self.min_wait_s = min_wait_s
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._preparing = 0  # requests accepted but still being decoded (they will be submitted soon)
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "failed": 0, "retried_batches": 0}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Batcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fusionaudio-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job) -> Future:
        """Queue ``job``; the future resolves to its ``Result`` (or raises its error)."""
        fut: Future = Future()
        self._queue.put((job, fut))
        return fut

    def queued(self) -> int:
        return self._queue.qsize()

    @contextmanager
    def preparing(self):
        """Wrap the decoding of a request: the worker waits (up to ``max_wait_s``) for it to join a batch."""
        with self._lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._lock:
                self._preparing -= 1

    # -- worker ---------------------------------------------------------------------------------
    def _collect(self) -> list | None:
        first = self._queue.get()
        if first is _STOP:
            return None
        items = [first]
        start = time.monotonic()
        while len(items) < self.max_batch_size:
            elapsed = time.monotonic() - start
            wait = elapsed < self.max_wait_s and (self._preparing > 0 or elapsed < self.min_wait_s)
            try:
                item = self._queue.get(timeout=0.002) if wait else self._queue.get_nowait()
            except queue.Empty:
                if wait:
                    continue
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            items.append(item)
        return items

    def _groups(self, items: list) -> list[list]:
        groups: dict = {}
        alone = []
        for job, fut in items:
            if not fut.set_running_or_notify_cancel():
                continue  # the client went away
            key = self.backend.batch_key(job)
            (alone.append([(job, fut)]) if key is None else groups.setdefault(key, []).append((job, fut)))
        return list(groups.values()) + alone

    def _loop(self) -> None:
        while True:
            items = self._collect()
            if items is None:
                return
            for group in self._groups(items):
                try:
                    self._run_group(group)
                except BaseException as exc:  # noqa: BLE001 - never let the worker die
                    log.exception("batch worker error")
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)

    def _run_group(self, group: list) -> None:
        jobs = [job for job, _ in group]
        try:
            results = self.backend.run(jobs)
        except Exception as exc:  # noqa: BLE001
            if len(group) == 1:
                with self._lock:
                    self.stats["failed"] += 1
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
                group[0][1].set_exception(exc)
                return
            log.warning("batch of %d failed (%s: %s); retrying its requests one by one",
                        len(group), type(exc).__name__, exc)
            with self._lock:
                self.stats["retried_batches"] += 1
            for item in group:
                self._run_group([item])
            return
        with self._lock:
            self.stats["requests"] += len(group)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
        for (_, fut), result in zip(group, results):
            fut.set_result(result)
