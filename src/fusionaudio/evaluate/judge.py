"""A small OpenAI-compatible HTTP client (chat completions + embeddings), standard library only.

* retries with exponential backoff (and jitter; ``Retry-After`` honoured) on 429, 5xx,
  timeouts and connection errors; other 4xx fail at once;
* a concurrency bound (thread pool) for batches of requests;
* an on-disk sqlite cache keyed by endpoint + model + request body (messages, temperature,
  max_tokens), so a rerun costs nothing.

The API key is read from the environment variable named by ``api_key_env``; no key is
ever taken on the command line. Without the variable, requests carry no ``Authorization``
header (fine for local servers).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fusionaudio.evaluate.cache import SqliteCache, default_cache_dir, hash_key

logger = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class JudgeError(RuntimeError):
    """A request to the judge endpoint failed for good."""


class JudgeUnavailable(JudgeError):
    """The endpoint itself failed (refused, timed out, 5xx/429 after every retry, or 401/403/404: a wrong
    key, URL or model), as opposed to one request it rejected: trying again later may succeed."""


UNAVAILABLE_STATUS = {401, 403, 404}


class OpenAICompatClient:
    """Client for an OpenAI-compatible endpoint (``{base_url}/chat/completions``, ``/embeddings``)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        max_workers: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if not base_url:
            raise ValueError("a judge/embedding base URL is required (e.g. https://api.openai.com/v1)")
        if not model:
            raise ValueError("a judge/embedding model name is required")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self.api_key:
            logger.warning("environment variable %s is not set; sending requests without a key", api_key_env)
        self.max_workers = max(1, int(max_workers))
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = SqliteCache(cache_dir / "openai_compat.sqlite") if use_cache else None
        host = urllib.parse.urlparse(self.base_url).hostname or ""
        handlers = [urllib.request.ProxyHandler({})] if host in _LOCAL_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}
        self._stats_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    # ------------------------------------------------------------------ HTTP
    def _post(self, route: str, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/{route}"
        last_err = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with self._opener.open(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                last_err = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise (JudgeUnavailable if e.code in UNAVAILABLE_STATUS else JudgeError)(last_err) from None
                retry_after = _parse_retry_after(e.headers.get("Retry-After"))
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
                last_err = f"{type(e).__name__} contacting {url}: {e}"
            except json.JSONDecodeError as e:
                last_err = f"invalid JSON from {url}: {e}"
            if attempt == self.max_retries:
                break
            delay = min(self.backoff_max, self.backoff_base * (2**attempt)) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_max))
            logger.warning("%s; retry %d/%d in %.2fs", last_err, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise JudgeUnavailable(f"giving up after {self.max_retries + 1} attempts: {last_err}")

    # ------------------------------------------------------------------ chat
    def chat(self, messages: list[dict], temperature: float = 0.0, max_tokens: int = 512) -> str:
        """One chat completion; returns the reply text (cached)."""
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        key = hash_key("chat", self.base_url, body)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return hit.decode("utf-8")
        reply = self._post("chat/completions", body)
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"unexpected chat reply from {self.base_url}: {str(reply)[:300]}") from None
        text = (text or "").strip()
        if self.cache is not None:
            self.cache.put(key, text.encode("utf-8"))
        return text

    def chat_many(self, conversations: list[list[dict]], **kwargs) -> list[str]:
        """Run many chat completions on a bounded thread pool; results keep the input order.

        Raises :class:`JudgeError` if any request fails for good (finished replies stay cached,
        so a rerun only repeats the failed ones).
        """
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(conversations))) as pool:
            futures = [pool.submit(self.chat, msgs, **kwargs) for msgs in conversations]
            results, errors = [], []
            for i, fut in enumerate(futures):
                try:
                    results.append(fut.result())
                except JudgeError as e:
                    results.append(None)
                    errors.append((i, e))
        if errors:
            i, e = errors[0]
            raise JudgeError(f"{len(errors)} of {len(conversations)} judge requests failed; first (item {i}): {e}")
        return results

    # ------------------------------------------------------------ embeddings
    def embed(self, texts: list[str], batch_size: int = 256) -> list[list[float]]:
        """Embeddings for ``texts`` via ``/embeddings`` (not cached here; see ``embeddings.CachedEmbedder``)."""
        out: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            reply = self._post("embeddings", {"model": self.model, "input": chunk})
            try:
                data = sorted(reply["data"], key=lambda d: d.get("index", 0))
                vecs = [d["embedding"] for d in data]
            except (KeyError, TypeError):
                raise JudgeError(f"unexpected embeddings reply from {self.base_url}: {str(reply)[:300]}") from None
            if len(vecs) != len(chunk):
                raise JudgeError(f"{self.base_url} returned {len(vecs)} embeddings for {len(chunk)} inputs")
            out.extend(vecs)
        return out


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def client_from_args(
    judge_base_url: str,
    judge_model: str,
    judge_api_key_env: str = "OPENAI_API_KEY",
    judge_cache_dir: str | None = None,
    judge_workers: int = 8,
    judge_max_retries: int = 6,
    judge_timeout: float = 120.0,
    judge_backoff: float = 1.0,
    no_cache: bool = False,
) -> OpenAICompatClient:
    """Build a client from the CLI flag names shared by the evaluators."""
    return OpenAICompatClient(
        base_url=judge_base_url,
        model=judge_model,
        api_key_env=judge_api_key_env,
        cache_dir=judge_cache_dir,
        use_cache=not no_cache,
        max_workers=judge_workers,
        max_retries=judge_max_retries,
        timeout=judge_timeout,
        backoff_base=judge_backoff,
    )
