"""Running: one shard (plan batches, prefetch audio, generate, journal), the merge, and the three ways
to run shards (one process, ``--num_workers`` children, ``torchrun`` ranks)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from fusionaudio.infer import journal, loader
from fusionaudio.infer.answerers import GEN_OPTIONS, generation_options, load_answerer, prompt_key
from fusionaudio.infer.merge import check_paths, merge
from fusionaudio.infer.records import OUTPUT_FIELDS, InferError, Item, make_items, output_record, read_input, resolver_from_args

log = logging.getLogger("fusionaudio.infer")

#: How long ranks that finished wait at the final barrier for the slowest rank (torchrun).
BARRIER_TIMEOUT = timedelta(days=7)


def run_settings(args) -> dict:
    """What determines the predictions: a work dir holding results made otherwise is not resumed."""
    return {
        **{f"generation.{k}": v for k, v in generation_options(args.arch, args).items()},
        "arch": args.arch,
        "base_model": None if args.base_model is None else str(Path(args.base_model).resolve()),
        "model_path": None if args.model_path is None else str(Path(args.model_path).resolve()),
        "dtype": args.dtype,
        "seed": args.seed,
        "ignore_input": args.ignore_input,
        "prompt_mode": args.prompt_mode,
        "structured": args.structured,
        "resampler": args.resampler,
        "attention": args.attention,
        "audio_root": None if args.audio_root is None else str(Path(args.audio_root).resolve()),
        "path_map": [list(p) for p in args.path_map or ()],
        # only when set: runs started before the option existed resume as they were
        **({"quantize": args.quantize} if getattr(args, "quantize", "none") != "none" else {}),
        # only a non-default engine is recorded, so work dirs of earlier versions still resume
        **({"engine": args.engine, "vllm_lora": args.vllm_lora} if getattr(args, "engine", "hf") != "hf" else {}),
    }


def work_dir_of(args) -> Path:
    return Path(args.work_dir) if args.work_dir else journal.default_work_dir(args.json_output)


def prepare_work_dir(args) -> Path:
    work_dir = journal.make_work_dir(work_dir_of(args))
    journal.check_settings(work_dir, run_settings(args))
    return work_dir


def pending(items: list[Item], done: dict[str, dict], retry_errors: bool) -> list[Item]:
    """Items with no finished entry (or only an error entry, with ``retry_errors``)."""
    def finished(item):
        entry = done.get(item.record_id)
        return entry is not None and not (retry_errors and entry["record"].get("error") is not None)

    return [it for it in items if not finished(it)]


def make_batches(items: list[Item], batch_size: int, key=None) -> list[list[Item]]:
    """Batches of records that all have audio or are all text only; within each group records of
    similar prompt length (``key``) go together so that little padding is decoded. Batches are
    ordered by their first record's index."""
    batches = []
    for with_audio in (True, False):
        group = [it for it in items if (it.audio_path is not None) == with_audio]
        if key is not None:
            group.sort(key=lambda it: (key(it), it.index))
        batches += [sorted(group[i:i + batch_size], key=lambda it: it.index) for i in range(0, len(group), batch_size)]
    return sorted(batches, key=lambda b: b[0].index)


def _audsem_rate(base_model) -> int:
    try:
        return int(json.loads((Path(base_model) / "preprocessor_config.json").read_text())["sampling_rate"])
    except (OSError, ValueError, KeyError, TypeError):
        return 16000


def run_shard(args, rank: int, world: int, device, run_id: str, progress: str, records=None) -> int:
    """Answer this shard's unfinished records; return how many were done now.

    ``progress``: ``"all"`` (a bar over every shard's records), ``"own"`` (this shard's) or ``"off"``."""
    from tqdm import tqdm

    records = records if records is not None else read_input(args.json_input)[0]
    items = make_items(records, args.json_input, resolver_from_args(args))
    clash = sorted({k for it in items for k in OUTPUT_FIELDS if k in it.record})
    if clash and rank == 0:
        log.warning("input records already have field(s) %s: the output replaces them", clash)
    work_dir = prepare_work_dir(args)
    writer = journal.ShardWriter(work_dir, rank)  # cuts a partial line of this shard before anything is read
    try:
        done = journal.read_all_shards(work_dir)
        todo_all = pending(items, done, args.retry_errors)
        todo = [it for it in todo_all if it.index % world == rank]
        mine = sum(1 for it in items if it.index % world == rank)
        log.info("shard %d/%d: %d records, %d finished earlier, %d to do", rank, world, mine, mine - len(todo),
                 len(todo))
        if not todo:
            return 0
        batches = make_batches(todo, args.batch_size, key=lambda it: prompt_key(args, it))
        prepare = loader.preparer(args.arch, args.resampler)
        if args.arch == "audsemthinker":
            prepare.keywords["sampling_rate"] = _audsem_rate(args.base_model)
        # the loader workers start decoding the first batches while the model loads
        stream = loader.iterate(batches, prepare, args.loader_workers)
        backend = load_answerer(args, device)
        watcher = journal.ShardProgress(work_dir) if progress == "all" else None
        total = len(todo_all) if progress == "all" else len(todo)
        with tqdm(total=total, unit="rec", desc=f"infer shard {rank}/{world}" if progress == "own" else "infer",
                  disable=progress == "off", dynamic_ncols=True, smoothing=0.1) as bar:
            for batch, prepared in stream:
                try:
                    results = backend.answer(batch, prepared)
                except Exception as exc:
                    exc.add_note(f"while answering records {[it.index for it in batch]} of {args.json_input}")
                    raise
                writer.write([{"record_id": it.record_id, "index": it.index, "run_id": run_id, "rank": rank,
                               "record": output_record(it, res, args.structured)} for it, res in zip(batch, results)])
                bar.update(watcher.poll() if watcher else len(batch))
        return len(todo)
    finally:
        writer.close()


# --------------------------------------------------------------------------- processes


def worker_device(requested: str | None, local_rank: int, world: int):
    """The device of worker ``local_rank`` of ``world`` on this machine: ``auto``/``cuda`` ->
    ``cuda:local_rank`` when CUDA is available and ``world > 1`` (else CPU or the one GPU); an explicit
    ``cpu`` or ``cuda:K`` is used as given."""
    import torch

    from fusionaudio.loading.device import resolve_device

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


def _locked(args, exclusive: bool, what: str):
    work_dir = journal.make_work_dir(work_dir_of(args))
    return journal.RunLock(work_dir, exclusive, what, output=args.json_output)  # the output, whatever the work dir


def run_single(args) -> int:
    """One process, or one ``--shard R/W`` of a larger run (no merge then)."""
    rank, world = args.shard
    check_paths(args.json_input, args.json_output, work_dir_of(args))
    lock = None if args.child else _locked(args, world == 1, "this run" if world == 1 else f"--shard {rank}/{world}")
    try:
        records, _ = read_input(args.json_input)  # bad input fails before torch is imported
        device = worker_device(args.device, 0, 1)
        _resolve_dtype(args, device)
        progress = "off" if args.no_progress or args.child else ("all" if world == 1 else "own")
        run_shard(args, rank, world, device, args.run_id or uuid.uuid4().hex[:12], progress, records)
        if world > 1:
            if not args.child:
                log.info("shard %d/%d finished; merge with: python -m fusionaudio.infer merge --json_input %s "
                         "--json_output %s%s", rank, world, args.json_input, args.json_output,
                         f" --work_dir {args.work_dir}" if args.work_dir else "")
            return 0
        return merge(args.json_input, args.json_output, args.work_dir, args.answer_field, lock=False)
    finally:
        if lock:
            lock.close()


def run_torchrun(args) -> int:
    """One rank of a ``torchrun`` job: shard by RANK/WORLD_SIZE, barrier, rank 0 merges."""
    import torch.distributed as dist

    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    check_paths(args.json_input, args.json_output, work_dir_of(args))
    device = worker_device(args.device, local_rank, world)
    _resolve_dtype(args, device)
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)  # CPU barrier only; no tensors are exchanged
    lock = None
    try:
        lock = _locked(args, False, f"torchrun rank {rank}")
        elastic_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")  # one per torchrun invocation by default
        run_id = args.run_id or (elastic_id if elastic_id != "none" else f"rank{rank}-{uuid.uuid4().hex[:12]}")
        run_shard(args, rank, world, device, run_id, "off" if args.no_progress or rank else "all")
        log.info("rank %d done; waiting for the other ranks", rank)
        dist.barrier()
        return merge(args.json_input, args.json_output, args.work_dir, args.answer_field, lock=False) if rank == 0 else 0
    finally:
        if lock:
            lock.close()
        dist.destroy_process_group()


def _child_argv(args, rank: int, world: int, device: str, run_id: str) -> list[str]:
    argv = [sys.executable, "-m", "fusionaudio.infer", "--shard", f"{rank}/{world}", "--device", device,
            "--run_id", run_id, "--child", "--dtype", args.dtype]
    for name in ("json_input", "json_output", "work_dir", "base_model", "model_path", "arch", "batch_size",
                 "seed", "prompt_mode", "resampler", "attention", "audio_root", "loader_workers", "quantize",
                 *GEN_OPTIONS):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name}", str(value)]
    for old, new in args.path_map or ():
        argv += ["--path_map", f"{old}={new}"]
    for flag in ("structured", "ignore_input", "retry_errors"):
        if getattr(args, flag):
            argv.append(f"--{flag}")
    return argv


def _worker_devices(args, n: int) -> list[str]:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device not in (None, "auto", "cuda"):
        return [args.device] * n
    if gpus >= n:
        return [f"cuda:{r}" for r in range(n)]
    if args.device == "cuda":
        raise InferError(f"--device cuda with --num_workers {n} needs {n} GPUs, found {gpus}")
    if gpus:
        log.warning("%d GPUs for %d workers: running every worker on CPU", gpus, n)
    return ["cpu"] * n


def run_workers(args) -> int:
    """``--num_workers N``: N child processes (GPU r each when there are N GPUs, else CPU), a progress bar
    over all shards, then the merge. A failed worker leaves its finished records for the next attempt."""
    check_paths(args.json_input, args.json_output, work_dir_of(args))
    lock = _locked(args, True, "this run")
    try:
        return _run_workers(args)
    finally:
        lock.close()


def _run_workers(args) -> int:
    from tqdm import tqdm

    n = args.num_workers
    records, _ = read_input(args.json_input)  # fail fast on bad input or settings
    devices = _worker_devices(args, n)
    if args.dtype is None:
        args.dtype = "bfloat16" if devices[0].startswith("cuda") else "float32"
    items = make_items(records, args.json_input, resolver_from_args(args))
    work_dir = prepare_work_dir(args)
    args.work_dir = str(work_dir)
    todo = pending(items, journal.read_all_shards(work_dir), args.retry_errors)
    log.info("%d records, %d finished earlier, %d to do on %d workers (%s)", len(items), len(items) - len(todo),
             len(todo), n, ", ".join(devices))
    if todo:
        run_id = args.run_id or uuid.uuid4().hex[:12]
        watcher = journal.ShardProgress(work_dir)
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
    return merge(args.json_input, args.json_output, work_dir, args.answer_field, lock=False)
