"""A tiny thread-safe on-disk key/value cache (sqlite) for embeddings and judge replies."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path


def default_cache_dir() -> Path:
    """``$FUSIONAUDIO_CACHE`` or ``~/.cache/fusionaudio``."""
    env = os.environ.get("FUSIONAUDIO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fusionaudio"


def hash_key(*parts) -> str:
    """A stable sha256 over JSON-serialised parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SqliteCache:
    """Bytes values keyed by strings, in one sqlite file; safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            self._conn.commit()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for k, v in self._conn.execute(f"SELECT k, v FROM kv WHERE k IN ({marks})", chunk):
                    out[k] = bytes(v)
        return out

    def put_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", list(items.items()))
            self._conn.commit()

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def close(self) -> None:
        with self._lock:
            self._conn.close()
