"""Per clip and stage results on disk: ``<output_dir>/work/results/<stage>/<clip_id>.json``.

A result is written to a temporary file, fsynced and renamed over the final name, so after a
kill -9 a result is either complete or absent; a present result is never recomputed. The store is
plain files, so every Ray worker (on a shared filesystem) sees the same state as the driver.

A result record::

    {"clip_id", "stage", "status": "ok" | "error" | "skipped" | "filtered",
     "output": {...} | null, "error": "reason" | null, "model": ..., "settings": {...},
     "run": "<host:pid:start of the process that computed it>", "seconds": float,
     "retry": true (only on an error from the environment: the next run recomputes it)}
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

STATUSES = ("ok", "error", "skipped", "filtered")
RUN_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultStore:
    def __init__(self, output_dir):
        self.root = Path(output_dir) / "work"
        self.results = self.root / "results"

    def media_dir(self, clip_id: str) -> Path:
        return self.root / "media" / clip_id

    def path(self, stage: str, clip_id: str) -> Path:
        return self.results / stage / f"{clip_id}.json"

    def has(self, stage: str, clip_id: str) -> bool:
        return self.path(stage, clip_id).is_file()

    def get(self, stage: str, clip_id: str) -> dict | None:
        p = self.path(stage, clip_id)
        if not p.is_file():
            return None
        return json.loads(p.read_text())

    def drop(self, clip_id: str, stages) -> None:
        """Remove the clip's results of ``stages`` (they were made from a result being recomputed)."""
        for stage in stages:
            self.path(stage, clip_id).unlink(missing_ok=True)

    def put(self, stage: str, clip_id: str, status: str, output=None, error: str | None = None,
            info: dict | None = None, seconds: float = 0.0) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        rec = {"clip_id": clip_id, "stage": stage, "status": status, "output": output, "error": error,
               **(info or {}), "run": RUN_ID, "seconds": round(float(seconds), 4), "time": time.time()}
        atomic_write_text(self.path(stage, clip_id), json.dumps(rec, ensure_ascii=False))
        return rec
