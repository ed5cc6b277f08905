"""The work directory: shard journals (one JSON line per finished record, fsync'ed per batch), the run
settings, the per-output lock, atomic writes and the clean-up of temporary files left by kills."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path

from fusionaudio.infer.records import InferError, is_valid_result

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None

log = logging.getLogger("fusionaudio.infer")

CONFIG_NAME = "run_config.json"
SHARD_GLOB = "shard-*.jsonl"
LOCK_NAME = ".lock"
#: Temporary files this project writes: ``.{name}.{pid}.tmp`` beside their target.
TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def io_error(path, exc: OSError, action: str) -> InferError:
    """An :class:`InferError` naming the path and the system's reason (disk full, permission, ...)."""
    reason = exc.strerror or str(exc)
    return InferError(f"{path}: cannot {action} ({reason}{f', errno {exc.errno}' if exc.errno else ''})")


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """Newline-terminated lines of ``data`` and the length of the unterminated tail (a partial write)."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], len(data) - end


def read_shard(path: Path) -> list[dict]:
    """Entries of one shard file. An unterminated final line (a write cut by a kill) is ignored; a line
    that is terminated but not a valid entry (bad JSON, or not a finished result of the record it
    names) is reported with a warning and ignored, so its record is redone."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise io_error(path, exc, "read the shard file") from None
    lines, tail = complete_lines(data)
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
                and isinstance(entry.get("index"), int) and is_valid_result(entry["record_id"], entry.get("record"))):
            log.warning("%s: line %d is not a valid shard entry (a finished result with record_id, prediction "
                        "and error); ignoring it, its record will be redone", path, lineno)
            continue
        entries.append(entry)
    if tail:
        log.info("%s: ignoring an incomplete final line (%d bytes, an interrupted write)", path, tail)
    return entries


def read_all_shards(work_dir: Path) -> dict[str, dict]:
    """Finished entries of every shard file, by record id. A record with several entries (a retried
    error) keeps the one without an error, else the first."""
    done: dict[str, dict] = {}
    for path in sorted(Path(work_dir).glob(SHARD_GLOB)):
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


#: (fd, device, inode) of every file this process locked; a forked helper closes them (close_inherited_locks)
_LOCKED: set[tuple[int, int, int]] = set()


def _flock(file, exclusive: bool) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(file.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        return False
    st = os.fstat(file.fileno())
    _LOCKED.add((file.fileno(), st.st_dev, st.st_ino))
    return True


def close_inherited_locks() -> None:
    """In a forked child (a loader worker): close its copies of the parent's locked files. An flock lives as
    long as any process holds the open file, so without this a child outliving a killed parent would keep
    the run's lock (and a restart would be refused); closing never unlocks the parent's own copy."""
    for fd, dev, ino in list(_LOCKED):
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (dev, ino):  # still that file, not a descriptor number reused since
                os.close(fd)
    _LOCKED.clear()


class ShardWriter:
    """Appends entries to ``shard-{rank}.jsonl``: a whole batch per write, then flush + fsync.

    Opening takes an exclusive advisory lock (two runs on one shard is refused) and cuts an incomplete
    final line left by a killed run, so that new lines never join a partial one."""

    def __init__(self, work_dir: Path, rank: int):
        self.path = Path(work_dir) / f"shard-{rank}.jsonl"
        existed = self.path.exists()
        try:
            self.file = open(self.path, "ab")
        except OSError as exc:
            raise io_error(self.path, exc, "open the shard file") from None
        if not _flock(self.file, exclusive=True):
            self.file.close()
            raise InferError(f"{self.path} is locked by another process: is the same run already going?")
        try:
            _, tail = complete_lines(self.path.read_bytes())
            if tail:
                log.warning("%s: cutting an incomplete final line (%d bytes) left by an interrupted run", self.path, tail)
                self.file.truncate(self.path.stat().st_size - tail)
                os.fsync(self.file.fileno())
        except OSError as exc:
            self.file.close()
            raise io_error(self.path, exc, "repair the shard file") from None
        if not existed:
            _fsync_dir(self.path.parent)

    def write(self, entries: list[dict]) -> None:
        data = b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in entries)
        try:
            self.file.write(data)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise io_error(self.path, exc, f"append {len(entries)} results") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


class ShardProgress:
    """Counts the lines appended to the shard files since creation (for a progress bar over all shards)."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.offsets = {p: p.stat().st_size for p in self.work_dir.glob(SHARD_GLOB)}

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


# --------------------------------------------------------------------------- locks and temp files


def output_lock_path(json_output) -> Path:
    """``.<name>.lock`` beside the output: held by every run that will write ``json_output``."""
    path = Path(json_output)
    return path.with_name(f".{path.name}.lock")


def _take_lock(path: Path, exclusive: bool, refusal: str):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(path, "a")
    except OSError as exc:
        raise io_error(path, exc, "create the lock file") from None
    if not _flock(file, exclusive):
        file.close()
        raise InferError(refusal)
    return file


class RunLock:
    """Two locks. The output's (``.<name>.lock`` beside ``json_output``, when given): whatever the work
    directory, two runs never write the same output. The work directory's (``<work_dir>/.lock``).
    Each is held exclusively by a whole run (one process, or a ``--num_workers`` parent) and shared by a
    part of a run (``--shard R/W``, a torchrun rank, the ``merge`` command). So a plain run and a shard
    run on one output refuse each other, while the shards of one run go side by side (two of them on the
    same shard file are refused by the shard's own lock)."""

    def __init__(self, work_dir: Path, exclusive: bool, what: str, output=None):
        self.path = Path(work_dir) / LOCK_NAME
        self.files = []
        if output is not None:
            lock = output_lock_path(output)
            self.files.append(_take_lock(lock, exclusive, (
                f"{output} is being written by another run ({lock} is locked): {what} cannot write it too. "
                "Wait for that run to finish, or write to another --json_output")))
        try:
            self.files.append(_take_lock(self.path, exclusive, (
                f"{Path(work_dir)} is in use by another run ({self.path} is locked): {what} cannot run beside it. "
                "Wait for it to finish (a run with another --json_output needs its own --work_dir too)")))
        except InferError:
            self.close()
            raise

    def close(self) -> None:
        for file in self.files:
            with contextlib.suppress(OSError):
                file.close()
        self.files = []


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def remove_stale_tmp(folder: Path, names: list[str]) -> list[Path]:
    """Delete ``.{name}.{pid}.tmp`` files of ``names`` in ``folder`` whose writer process is gone
    (left by a kill during an atomic write). Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        m = TMP_PATTERN.match(path.name)
        if m and m["name"] in names and not _pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted runs: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]))
    return removed


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``.{name}.{pid}.tmp`` + fsync + rename; an I/O error names
    the path and the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise io_error(path, exc, "write") from None


# --------------------------------------------------------------------------- settings


def check_settings(work_dir: Path, settings: dict) -> None:
    """Write ``run_config.json`` on the first attempt; refuse to resume with different settings. The settings
    bind only once a record is finished: an attempt that stopped before (a bad flag, a model that failed to
    load, a kill during loading) leaves nothing behind that the corrected command would be refused by."""
    path = Path(work_dir) / CONFIG_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InferError(f"{path}: unreadable ({exc}); delete it if the shard files there belong to this run")
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if not differ:
            return
        if read_all_shards(work_dir):
            detail = "; ".join(f"{k}: was {old.get(k)!r}, now {settings.get(k)!r}" for k in differ)
            raise InferError(f"{work_dir} holds results made with other settings ({detail}). Use the same settings, "
                             "another --work_dir, or delete that folder to start over")
        log.info("%s: no record was finished with the earlier settings; recording the new ones", path)
    write_atomic(path, json.dumps({"settings": settings}, indent=2) + "\n")


def default_work_dir(json_output) -> Path:
    return Path(str(json_output) + ".parts")


def errors_path(json_output) -> Path:
    return Path(str(json_output) + ".errors.json")


def make_work_dir(work_dir: Path) -> Path:
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(work_dir, exc, "create the work dir") from None
    remove_stale_tmp(work_dir, [CONFIG_NAME])
    return work_dir
