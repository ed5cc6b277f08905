"""Batch inference over a JSON / JSONL file of records: sharded, resumable, safe to kill.

Usage::

    # one process (CPU or one GPU)
    python -m fusionaudio.infer --json_input test.json --json_output preds.json \\
        --base_model BASE_DIR --model_path CHECKPOINT [--batch_size 8] [--do_sample False]
    # N local processes, one per GPU when there are N GPUs (else all on CPU)
    python -m fusionaudio.infer ... --num_workers N
    # or one process per GPU under torchrun
    torchrun --nproc_per_node N -m fusionaudio.infer ...
    # run one shard by hand (e.g. one per cluster job), then merge
    python -m fusionaudio.infer ... --shard 3/8
    python -m fusionaudio.infer merge --json_input test.json --json_output preds.json

Input: a JSON list (or JSONL) of records ``{audio_id, instruction, input?, output?, dataset?, task?, ...}``;
``audio_id`` is absolute or relative to the input file's folder, and ``"empty"``/``""``/``null`` mean text only.

Output (``json_output``; JSONL when it ends in ``.jsonl``, else a JSON list): every input record once, in
input order, unchanged (the ground truth ``output`` included) plus

* ``record_id``: ``"{index}-{hash}"``, the record's position in the input and a hash of its content;
* ``prediction``: the model's answer, or ``null`` when the record's audio could not be used;
* ``error``: ``null``, or the :class:`~fusionaudio.audio.AudioError` message (missing / corrupt / empty audio);
* ``audio_info``: what the front end saw (duration_s, channels, sample_rate, truncated, ...), ``null`` for
  text-only records and errors;
* ``structured`` (with ``--structured``): ``fusionaudio.structured.parse_structured(prediction)``.

Records with an ``error`` are also listed in ``<json_output>.errors.json``.

Work files (``--work_dir``, default ``<json_output>.parts/``): shard ``r`` of ``W`` takes the records whose
index ``i`` has ``i % W == r`` and appends one line per finished record to ``shard-{r}.jsonl``::

    {"record_id": "...", "index": 12, "run_id": "...", "rank": 0, "record": {<output record>}}

flushed and fsync'ed after every batch. A restarted run reads every ``shard-*.jsonl`` (an incomplete final
line, left by a kill, is ignored and cut off before that shard appends again), skips finished records, and
works only on the rest; so the world size may change between attempts. ``run_config.json`` holds the settings
that change predictions (model, dtype, generation options, ...); a restart with different settings is
refused rather than mixing results. The merge (the parent process, rank 0 after a barrier, or the ``merge``
command) writes ``json_output`` only when every record is finished; otherwise it names the missing records
and exits with status 1.

Sampling: with ``--seed S`` each batch is seeded with ``S + index of its first record``; so with
``--batch_size 1`` a record's sample does not depend on sharding or restarts. Greedy decoding
(``--do_sample False``) is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None

log = logging.getLogger("fusionaudio.infer")

CONFIG_NAME = "run_config.json"
SHARD_GLOB = "shard-*.jsonl"
GEN_OPTIONS = ("do_sample", "num_beams", "temperature", "top_p", "top_k", "max_new_tokens")
MAX_LISTED = 20
#: Fields the output adds to each input record (replacing same-named input fields).
OUTPUT_FIELDS = ("record_id", "prediction", "error", "audio_info", "structured")
#: How long ranks that finished wait at the final barrier for the slowest rank (torchrun).
BARRIER_TIMEOUT = timedelta(days=7)


class InferError(RuntimeError):
    """A user-facing failure (bad input, inconsistent work dir, ...): printed as one line."""


# --------------------------------------------------------------------------- records


def record_id(index: int, record: dict) -> str:
    """Stable id: the position in the input file plus a hash of the record's content."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{index}-{hashlib.sha1(blob.encode('utf-8')).hexdigest()[:12]}"


def load_input(path) -> list[dict]:
    """Records of ``path`` (JSON list or JSONL), checked: each an object with a string ``instruction``,
    an ``audio_id`` (string, or null for text only) and, if present, a string (or null) ``input``."""
    from .data import DataValidationError, load_records

    path = Path(path)
    if not path.is_file():
        raise InferError(f"--json_input {path}: file not found")
    try:
        records = load_records(path)
    except (DataValidationError, UnicodeDecodeError) as exc:
        raise InferError(f"--json_input {path}: {exc}") from None
    if not isinstance(records, list):
        raise InferError(f"--json_input {path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise InferError(f"--json_input {path}: no records")
    bad = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            bad.append(f"record {i}: not a JSON object ({type(rec).__name__})")
            continue
        if not isinstance(rec.get("instruction"), str):
            bad.append(f"record {i}: 'instruction' must be a string, got {type(rec.get('instruction')).__name__}")
        if "audio_id" not in rec:
            bad.append(f"record {i}: no 'audio_id' (use \"empty\" for a text-only question)")
        elif rec["audio_id"] is not None and not isinstance(rec["audio_id"], str):
            bad.append(f"record {i}: 'audio_id' must be a string or null, got {type(rec['audio_id']).__name__}")
        if rec.get("input") is not None and not isinstance(rec["input"], str):
            bad.append(f"record {i}: 'input' must be a string, got {type(rec['input']).__name__}")
    if bad:
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise InferError(f"--json_input {path}: {len(bad)} bad records:\n  " + "\n  ".join(bad[:MAX_LISTED]) + more)
    return records


@dataclass
class Item:
    """One record to answer."""

    index: int
    record_id: str
    record: dict
    audio_path: Path | None  # None: text only


def make_items(records: list[dict], json_input) -> list[Item]:
    from .data import resolve_audio_path

    return [Item(i, record_id(i, r), r, resolve_audio_path(r["audio_id"], json_input)) for i, r in enumerate(records)]


# --------------------------------------------------------------------------- shard files


def _complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """Newline-terminated lines of ``data`` and the length of the unterminated tail (a partial write)."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], len(data) - end


def read_shard(path: Path) -> list[dict]:
    """Entries of one shard file. An unterminated final line (a write cut by a kill) is ignored; a line
    that is terminated but not a valid entry is reported with a warning and ignored (its record is redone)."""
    lines, tail = _complete_lines(path.read_bytes())
    entries = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("%s: line %d is not valid JSON (%s); ignoring it, its record will be redone", path, lineno, exc)
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("record_id"), str)
                and isinstance(entry.get("record"), dict)):
            log.warning("%s: line %d is not a shard entry; ignoring it, its record will be redone", path, lineno)
            continue
        entries.append(entry)
    if tail:
        log.info("%s: ignoring an incomplete final line (%d bytes, an interrupted write)", path, tail)
    return entries


def read_all_shards(work_dir: Path) -> dict[str, dict]:
    """Finished entries of every shard file, by record id. A record with several entries (a retried
    error) keeps the one without an error, else the first."""
    done: dict[str, dict] = {}
    for path in sorted(work_dir.glob(SHARD_GLOB)):
        for entry in read_shard(path):
            old = done.get(entry["record_id"])
            if old is None or (old["record"].get("error") is not None and entry["record"].get("error") is None):
                done[entry["record_id"]] = entry
    return done


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Appends entries to ``shard-{rank}.jsonl``: a whole batch per write, then flush + fsync.

    Opening takes an exclusive advisory lock (two runs on one shard is refused) and cuts an incomplete
    final line left by a killed run, so that new lines never join a partial one."""

    def __init__(self, work_dir: Path, rank: int):
        self.path = work_dir / f"shard-{rank}.jsonl"
        existed = self.path.exists()
        self.file = open(self.path, "ab")
        if fcntl is not None:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.file.close()
                raise InferError(f"{self.path} is locked by another process: is the same run already going?") from None
        _, tail = _complete_lines(self.path.read_bytes())
        if tail:
            log.warning("%s: cutting an incomplete final line (%d bytes) left by an interrupted run", self.path, tail)
            self.file.truncate(self.path.stat().st_size - tail)
            os.fsync(self.file.fileno())
        if not existed:
            _fsync_dir(work_dir)

    def write(self, entries: list[dict]) -> None:
        data = b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in entries)
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class ShardProgress:
    """Counts the lines appended to the shard files since creation (for a progress bar over all shards)."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.offsets = {p: p.stat().st_size for p in work_dir.glob(SHARD_GLOB)}

    def poll(self) -> int:
        new = 0
        for path in self.work_dir.glob(SHARD_GLOB):
            try:
                size = path.stat().st_size
                offset = min(self.offsets.get(path, 0), size)  # a shard may have cut a partial line
                if size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        new += f.read(size - offset).count(b"\n")
                self.offsets[path] = size
            except FileNotFoundError:  # pragma: no cover - removed under us
                continue
        return new


# --------------------------------------------------------------------------- settings


def generation_options(args) -> dict:
    """The effective generation options: the architecture's defaults overridden by the given ones."""
    given = {k: getattr(args, k) for k in GEN_OPTIONS if getattr(args, k) is not None}
    if args.arch == "audsemthinker":
        from .audsem.config import GENERATION_DEFAULTS as defaults

        if given.get("num_beams", 1) != 1:
            raise InferError("--num_beams is not supported with --arch audsemthinker (only 1)")
        given.pop("num_beams", None)
    else:
        from .inference import GENERATION_DEFAULTS as defaults
    opts = {**defaults, **given}
    if opts["max_new_tokens"] < 1 or opts.get("num_beams", 1) < 1:
        raise InferError("--max_new_tokens and --num_beams must be >= 1")
    return opts


def run_settings(args) -> dict:
    """What determines the predictions: a work dir holding results made otherwise is not resumed."""
    return {
        **{f"generation.{k}": v for k, v in generation_options(args).items()},
        "arch": args.arch,
        "base_model": None if args.base_model is None else str(Path(args.base_model).resolve()),
        "model_path": None if args.model_path is None else str(Path(args.model_path).resolve()),
        "dtype": args.dtype,
        "seed": args.seed,
        "ignore_input": args.ignore_input,
        "prompt_mode": args.prompt_mode,
        "structured": args.structured,
    }


def check_settings(work_dir: Path, settings: dict) -> None:
    """Write ``run_config.json`` on the first attempt; refuse to resume with different settings."""
    path = work_dir / CONFIG_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InferError(f"{path}: unreadable ({exc}); delete it if the shard files there belong to this run")
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            detail = "; ".join(f"{k}: was {old.get(k)!r}, now {settings.get(k)!r}" for k in differ)
            raise InferError(f"{work_dir} holds results made with other settings ({detail}). Use the same settings, "
                             "another --work_dir, or delete that folder to start over")
        return
    tmp = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"settings": settings}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def default_work_dir(json_output) -> Path:
    return Path(str(json_output) + ".parts")


def prepare_work_dir(args) -> Path:
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(args.json_output)
    work_dir.mkdir(parents=True, exist_ok=True)
    check_settings(work_dir, run_settings(args))
    return work_dir


def pending(items: list[Item], done: dict[str, dict], retry_errors: bool) -> list[Item]:
    """Items with no finished entry (or only an error entry, with ``retry_errors``)."""
    def finished(item):
        entry = done.get(item.record_id)
        return entry is not None and not (retry_errors and entry["record"].get("error") is not None)

    return [it for it in items if not finished(it)]


# --------------------------------------------------------------------------- model backends


def _audio_error(exc: Exception) -> dict:
    """The result of a record whose audio is unusable."""
    return {"prediction": None, "error": str(exc), "audio_info": None}


class GamaBackend:
    """GAMA / FusionAudio: reference fbank front end + :meth:`FusionAudioInference.generate`."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    def answer(self, batch: list[Item]) -> list[dict]:
        from .audio import AudioError
        from .cli import audio_info_dict
        from .inference import Request

        results: list[dict | None] = [None] * len(batch)
        requests, where = [], []
        for k, item in enumerate(batch):
            info = None
            fbank = None
            if item.audio_path is not None:
                try:
                    fbank, info = self.engine.load_audio(item.audio_path)
                except AudioError as exc:
                    results[k] = _audio_error(exc)
                    continue
            text_input = None if self.ignore_input else item.record.get("input")
            requests.append(Request(item.record["instruction"], fbank, text_input))
            where.append((k, info))
        if requests:
            seed = None if self.seed is None else self.seed + batch[where[0][0]].index
            answers = self.engine.generate(requests, batch_size=len(requests), seed=seed, **self.gen)
            for (k, info), answer in zip(where, answers):
                results[k] = {"prediction": answer, "error": None,
                              "audio_info": None if info is None else audio_info_dict(info)}
        return results  # type: ignore[return-value]


class AudSemBackend:
    """AudSemThinker (Qwen2.5-Omni thinker): each clip is checked first so that a bad file becomes that
    record's error instead of failing its batch; a non-empty ``input`` is appended to the question."""

    def __init__(self, engine, gen: dict, seed: int | None, ignore_input: bool):
        self.engine, self.gen, self.seed, self.ignore_input = engine, gen, seed, ignore_input

    @staticmethod
    def audio_info(path: Path) -> dict:
        """Duration, channels and rate of a clip; raises :class:`AudioError` for unusable audio."""
        import inspect

        import torch

        from .audio import AudioError, read_audio
        from .audsem.model import load_audio

        wave, sr = read_audio(path)
        if wave.numel() == 0:
            raise AudioError("no audio samples", path)
        if not torch.isfinite(wave).all():
            raise AudioError("audio contains NaN or infinite samples", path)
        max_s = inspect.signature(load_audio).parameters["max_seconds"].default
        duration = wave.shape[-1] / sr
        return {"path": str(path), "duration_s": duration, "channels": int(wave.shape[0]), "sample_rate": sr,
                "truncated": max_s is not None and duration > max_s}

    def answer(self, batch: list[Item]) -> list[dict]:
        from .audio import AudioError

        results: list[dict | None] = [None] * len(batch)
        paths, questions, where = [], [], []
        for k, item in enumerate(batch):
            info = None
            if item.audio_path is not None:
                try:
                    info = self.audio_info(item.audio_path)
                except AudioError as exc:
                    results[k] = _audio_error(exc)
                    continue
            question, extra = item.record["instruction"], item.record.get("input")
            if extra and not self.ignore_input:
                question = f"{question}\n{extra}"
            paths.append(item.audio_path)
            questions.append(question)
            where.append((k, info))
        if paths:
            seed = None if self.seed is None else self.seed + batch[where[0][0]].index
            answers = self.engine.predict_batch(paths, questions, batch_size=len(paths), seed=seed, **self.gen)
            for (k, info), answer in zip(where, answers):
                results[k] = {"prediction": answer, "error": None, "audio_info": info}
        return results  # type: ignore[return-value]


def load_backend(args, device):
    from .inference import create_inference

    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=args.dtype)
    if getattr(engine, "model_label", None):
        log.warning("no --base_model: using the %s", engine.model_label)
    if engine.arch == "audsemthinker":
        if args.prompt_mode is not None:
            engine.prompt_mode = args.prompt_mode
        return AudSemBackend(engine, generation_options(args), args.seed, args.ignore_input)
    return GamaBackend(engine, generation_options(args), args.seed, args.ignore_input)


# --------------------------------------------------------------------------- one shard


def make_batches(items: list[Item], batch_size: int) -> list[list[Item]]:
    """Batches of records that all have audio or are all text only, in input order of their first record."""
    batches = []
    for with_audio in (True, False):
        group = [it for it in items if (it.audio_path is not None) == with_audio]
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return sorted(batches, key=lambda b: b[0].index)


def output_record(item: Item, result: dict, structured: bool) -> dict:
    out = {**item.record, "record_id": item.record_id, **result}
    if structured:
        from .structured import parse_structured

        out["structured"] = None if result["prediction"] is None else parse_structured(result["prediction"])
    return out


def run_shard(args, rank: int, world: int, device, run_id: str, progress: str) -> int:
    """Answer this shard's unfinished records; return how many were done now.

    ``progress``: ``"all"`` (a bar over every shard's records), ``"own"`` (this shard's) or ``"off"``."""
    from tqdm import tqdm

    items = make_items(load_input(args.json_input), args.json_input)
    clash = sorted({k for it in items for k in OUTPUT_FIELDS if k in it.record})
    if clash and rank == 0:
        log.warning("input records already have field(s) %s: the output replaces them", clash)
    work_dir = prepare_work_dir(args)
    writer = ShardWriter(work_dir, rank)  # cuts a partial line of this shard before anything is read
    try:
        done = read_all_shards(work_dir)
        todo_all = pending(items, done, args.retry_errors)
        todo = [it for it in todo_all if it.index % world == rank]
        mine = sum(1 for it in items if it.index % world == rank)
        log.info("shard %d/%d: %d records, %d finished earlier, %d to do", rank, world, mine, mine - len(todo),
                 len(todo))
        if not todo:
            return 0
        backend = load_backend(args, device)
        watcher = ShardProgress(work_dir) if progress == "all" else None
        total = len(todo_all) if progress == "all" else len(todo)
        with tqdm(total=total, unit="rec", desc=f"infer shard {rank}/{world}" if progress == "own" else "infer",
                  disable=progress == "off", dynamic_ncols=True, smoothing=0.1) as bar:
            for batch in make_batches(todo, args.batch_size):
                try:
                    results = backend.answer(batch)
                except Exception as exc:
                    exc.add_note(f"while answering records {[it.index for it in batch]} of {args.json_input}")
                    raise
                writer.write([{"record_id": it.record_id, "index": it.index, "run_id": run_id, "rank": rank,
                               "record": output_record(it, res, args.structured)} for it, res in zip(batch, results)])
                bar.update(watcher.poll() if watcher else len(batch))
        return len(todo)
    finally:
        writer.close()


# --------------------------------------------------------------------------- merge


def errors_path(json_output) -> Path:
    return Path(str(json_output) + ".errors.json")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge(json_input, json_output, work_dir=None) -> int:
    """Write ``json_output`` (every input record once, in input order) and ``<json_output>.errors.json``
    from the shard files. Returns 0, or 1 (and writes nothing) when records are missing."""
    work_dir = Path(work_dir) if work_dir else default_work_dir(json_output)
    if not work_dir.is_dir():
        raise InferError(f"work dir {work_dir} not found (run inference first, or pass --work_dir)")
    items = make_items(load_input(json_input), json_input)
    done = read_all_shards(work_dir)
    missing = [it for it in items if it.record_id not in done]
    stale = len(set(done) - {it.record_id for it in items})
    if stale:
        log.warning("%d finished entries in %s match no record of %s (was the input edited?); ignored",
                    stale, work_dir, json_input)
    if missing:
        listed = ", ".join(f"{it.index} ({it.record.get('audio_id')!r})" for it in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        log.error("%d of %d records of %s are not finished in %s: %s%s. Run the same command again to finish "
                  "them; %s was not written", len(missing), len(items), json_input, work_dir, listed, more, json_output)
        return 1
    out = [done[it.record_id]["record"] for it in items]
    errors = [{"index": it.index, "record_id": it.record_id, "audio_id": it.record.get("audio_id"),
               "error": rec["error"]} for it, rec in zip(items, out) if rec.get("error") is not None]
    json_output = Path(json_output)
    if json_output.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    else:
        text = json.dumps(out, ensure_ascii=False, indent=2) + "\n"
    _write_atomic(json_output, text)
    report = {"json_input": str(json_input), "json_output": str(json_output), "n_records": len(out),
              "n_errors": len(errors), "errors": errors}
    _write_atomic(errors_path(json_output), json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    log.info("wrote %d records to %s (%d with errors, listed in %s)", len(out), json_output, len(errors),
             errors_path(json_output))
    if errors:
        log.warning("%d records have no prediction because of bad audio, e.g. record %d: %s", len(errors),
                    errors[0]["index"], errors[0]["error"])
    return 0


# --------------------------------------------------------------------------- processes


def resolve_arch(args) -> None:
    """Turn ``--arch auto`` into ``gama`` or ``audsemthinker`` (from the base model's config) and check
    the options that only one architecture takes."""
    if args.arch == "auto":
        args.arch = "gama"
        if args.base_model is not None:
            from .audsem import detect_arch

            args.arch = detect_arch(args.base_model)
    if args.prompt_mode is not None and args.arch != "audsemthinker":
        raise InferError("--prompt_mode applies to --arch audsemthinker only")


def worker_device(requested: str | None, local_rank: int, world: int):
    """The device of worker ``local_rank`` of ``world`` on this machine: ``auto``/``cuda`` ->
    ``cuda:local_rank`` when CUDA is available and ``world > 1`` (else CPU or the one GPU); an explicit
    ``cpu`` or ``cuda:K`` is used as given."""
    import torch

    from .inference import resolve_device

    if requested in (None, "auto", "cuda") and torch.cuda.is_available() and world > 1:
        requested = f"cuda:{local_rank}"
    device, note = resolve_device(requested)
    if note:
        log.warning(note)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _resolve_dtype(args, device) -> None:
    if args.dtype is None:
        args.dtype = "bfloat16" if device.type == "cuda" else "float32"


def run_single(args) -> int:
    """One process, or one ``--shard R/W`` of a larger run (no merge then)."""
    rank, world = args.shard
    device = worker_device(args.device, 0, 1)
    _resolve_dtype(args, device)
    progress = "off" if args.no_progress or args.child else ("all" if world == 1 else "own")
    run_shard(args, rank, world, device, args.run_id or uuid.uuid4().hex[:12], progress)
    if world > 1:
        if not args.child:
            log.info("shard %d/%d finished; merge with: python -m fusionaudio.infer merge --json_input %s "
                 "--json_output %s%s", rank, world, args.json_input, args.json_output,
                     f" --work_dir {args.work_dir}" if args.work_dir else "")
        return 0
    return merge(args.json_input, args.json_output, args.work_dir)


def run_torchrun(args) -> int:
    """One rank of a ``torchrun`` job: shard by RANK/WORLD_SIZE, barrier, rank 0 merges."""
    import torch.distributed as dist

    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = worker_device(args.device, local_rank, world)
    _resolve_dtype(args, device)
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)  # CPU barrier only; no tensors are exchanged
    try:
        elastic_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")  # one per torchrun invocation by default
        run_id = args.run_id or (elastic_id if elastic_id != "none" else f"rank{rank}-{uuid.uuid4().hex[:12]}")
        run_shard(args, rank, world, device, run_id, "off" if args.no_progress or rank else "all")
        log.info("rank %d done; waiting for the other ranks", rank)
        dist.barrier()
        return merge(args.json_input, args.json_output, args.work_dir) if rank == 0 else 0
    finally:
        dist.destroy_process_group()


def _child_argv(args, rank: int, world: int, device: str, run_id: str) -> list[str]:
    argv = [sys.executable, "-m", "fusionaudio.infer", "--shard", f"{rank}/{world}", "--device", device,
            "--run_id", run_id, "--child", "--dtype", args.dtype]
    for name in ("json_input", "json_output", "work_dir", "base_model", "model_path", "arch", "batch_size",
                 "seed", "prompt_mode", *GEN_OPTIONS):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name}", str(value)]
    for flag in ("structured", "ignore_input", "retry_errors"):
        if getattr(args, flag):
            argv.append(f"--{flag}")
    return argv


def run_workers(args) -> int:
    """``--num_workers N``: N child processes (GPU r each when there are N GPUs, else CPU), a progress bar
    over all shards, then the merge. A failed worker leaves its finished records for the next attempt."""
    import torch
    from tqdm import tqdm

    n = args.num_workers
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device in (None, "auto", "cuda"):
        if gpus >= n:
            devices = [f"cuda:{r}" for r in range(n)]
        elif args.device == "cuda":
            raise InferError(f"--device cuda with --num_workers {n} needs {n} GPUs, found {gpus}")
        else:
            if gpus:
                log.warning("%d GPUs for %d workers: running every worker on CPU", gpus, n)
            devices = ["cpu"] * n
    else:
        devices = [args.device] * n
    if args.dtype is None:
        args.dtype = "bfloat16" if devices[0].startswith("cuda") else "float32"
    items = make_items(load_input(args.json_input), args.json_input)  # fail fast on bad input or settings
    work_dir = prepare_work_dir(args)
    args.work_dir = str(work_dir)
    todo = pending(items, read_all_shards(work_dir), args.retry_errors)
    log.info("%d records, %d finished earlier, %d to do on %d workers (%s)", len(items), len(items) - len(todo),
             len(todo), n, ", ".join(devices))
    if todo:
        run_id = args.run_id or uuid.uuid4().hex[:12]
        watcher = ShardProgress(work_dir)
        env = dict(os.environ)
        if devices[0] == "cpu" and "OMP_NUM_THREADS" not in env:  # share the cores between CPU workers
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        procs = [subprocess.Popen(_child_argv(args, r, n, devices[r], run_id), env=env) for r in range(n)]
        try:
            with tqdm(total=len(todo), unit="rec", desc="infer", disable=args.no_progress, dynamic_ncols=True,
                      smoothing=0.1) as bar:
                while any(p.poll() is None for p in procs):
                    time.sleep(0.5)
                    new = watcher.poll()
                    if new:
                        bar.update(new)
                bar.update(watcher.poll())
        finally:
            for p in procs:  # interrupted (Ctrl-C / SIGTERM): stop the workers too
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait()
        failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
        if failed:
            log.error("worker(s) failed: %s. Finished records are kept in %s; run the same command again to "
                      "resume", ", ".join(f"shard {r} (exit {c})" for r, c in failed), work_dir)
            return 1
    return merge(args.json_input, args.json_output, work_dir)


# --------------------------------------------------------------------------- command line


def parse_bool(text: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case): the reference's ``type=bool`` took "False" as True."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RANK/WORLD such as 0/4, got {text!r}") from None
    if not 0 <= rank < world:
        raise argparse.ArgumentTypeError(f"need 0 <= RANK < WORLD, got {text!r}")
    return rank, world


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .inference import GENERATION_DEFAULTS as d

    p = argparse.ArgumentParser(
        prog="python -m fusionaudio.infer",
        description="Batch inference over a JSON/JSONL file of records (sharded, resumable). "
                    "`python -m fusionaudio.infer merge --json_input X --json_output Y` merges the shard files.")
    p.add_argument("--json_input", required=True, help="records {audio_id, instruction, input?, output?, ...}")
    p.add_argument("--json_output", required=True, help="results; JSONL if it ends in .jsonl, else a JSON list")
    p.add_argument("--work_dir", default=None, help="shard files (default: <json_output>.parts/)")
    p.add_argument("--base_model", default=None, help="base model directory (default: the bundled demo model)")
    p.add_argument("--model_path", default=None, help="fine-tuned checkpoint")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"],
                   help="auto: from the base model's config (default auto)")
    g = p.add_argument_group("generation (defaults: the reference's; audsemthinker: its own, greedy 512 tokens)")
    g.add_argument("--do_sample", type=parse_bool, nargs="?", const=True, default=None,
                   help=f"true/false (default {d['do_sample']})")
    g.add_argument("--num_beams", type=positive_int, default=None, help=f"(default {d['num_beams']})")
    g.add_argument("--temperature", type=float, default=None, help=f"(default {d['temperature']})")
    g.add_argument("--top_p", type=float, default=None, help=f"(default {d['top_p']})")
    g.add_argument("--top_k", type=int, default=None, help=f"(default {d['top_k']})")
    g.add_argument("--max_new_tokens", type=positive_int, default=None, help=f"(default {d['max_new_tokens']})")
    g.add_argument("--seed", type=int, default=None, help="sampling seed; batch seed = seed + first record index")
    p.add_argument("--batch_size", type=positive_int, default=8, help="records per generate call (default 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; with workers/torchrun auto and cuda give one GPU each (default auto)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--num_workers", type=positive_int, default=1, help="local worker processes (default 1)")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="RANK/WORLD",
                   help="run only this shard (e.g. 3/8) and do not merge")
    p.add_argument("--structured", action="store_true",
                   help="also store `structured` = fusionaudio.structured.parse_structured(prediction)")
    p.add_argument("--ignore_input", action="store_true",
                   help="leave each record's `input` out of the prompt (the reference's inference script does)")
    p.add_argument("--prompt_mode", default=None, choices=["caption", "qa", "raw"],
                   help="audsemthinker prompt mode (default: the model class's own, caption)")
    p.add_argument("--retry_errors", action="store_true", help="redo records that finished with an audio error")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    # set by a --num_workers parent for its workers: one run id per attempt; no bar, no merge hint
    p.add_argument("--run_id", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def build_merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusionaudio.infer merge",
                                description="Merge shard files into json_output (every input record once, in order).")
    p.add_argument("--json_input", required=True)
    p.add_argument("--json_output", required=True)
    p.add_argument("--work_dir", default=None, help="default: <json_output>.parts/")
    p.add_argument("--debug", action="store_true")
    return p


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[infer rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else "[infer] "
    logging.basicConfig(level=logging.INFO, format=prefix + "%(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _sigterm_to_exit(signum, frame):  # pragma: no cover - exercised by signals
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    if argv[:1] == ["merge"]:
        args = build_merge_parser().parse_args(argv[1:])
        action = lambda: merge(args.json_input, args.json_output, args.work_dir)  # noqa: E731
    else:
        if argv[:1] == ["run"]:
            argv = argv[1:]
        args = build_parser().parse_args(argv)
        torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
        if sum([torchrun, args.num_workers > 1, args.shard != (0, 1)]) > 1:
            build_parser().error("use only one of torchrun, --num_workers and --shard")
        action = (lambda: run_torchrun(args)) if torchrun else \
            (lambda: run_workers(args)) if args.num_workers > 1 else (lambda: run_single(args))
    previous_handler = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    try:
        if argv[:1] != ["merge"]:
            resolve_arch(args)
        return action()
    except KeyboardInterrupt:
        log.error("interrupted; finished records are kept, run the same command again to resume")
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if args.debug:
            raise
        notes = " ".join(getattr(exc, "__notes__", []))
        log.error("%s: %s%s", type(exc).__name__, exc, f" ({notes})" if notes else "")
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
