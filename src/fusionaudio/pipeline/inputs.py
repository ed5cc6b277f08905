"""The clip list: a CSV or JSONL with ``path`` (audio or video), optional ``id``, ``start``, ``end``
(seconds) and ``youtube_id`` (used only when the downloader is on).

Malformed rows (no path, unreadable or non-finite numbers, end before start, duplicate or unsafe ids)
stop the run before anything starts, all of them in one message naming the file and each row (the first
:data:`MAX_LISTED`, and how many there are). A path that does not exist is *not* an input error: it
becomes that clip's ``prepare`` error, so the other clips continue.
"""

from __future__ import annotations

from fusionaudio.errors import InputError as BaseInputError

from fusionaudio.records import RecordError, read_records

import csv
import hashlib
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
COLUMNS = ("path", "id", "start", "end", "youtube_id")
#: Bad rows listed by name in the error (the count is always complete).
MAX_LISTED = 100


class InputError(BaseInputError):
    """The clip list is malformed; the message names the file and row."""


@dataclass
class Clip:
    id: str
    path: str | None
    start: float | None = None
    end: float | None = None
    youtube_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Clip":
        return cls(**{k: d.get(k) for k in ("id", "path", "start", "end", "youtube_id")})


def _rows(path: Path):
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not ({"path", "youtube_id"} & set(reader.fieldnames)):
                raise InputError(f"{path}: the CSV header must have a 'path' (or 'youtube_id') column; "
                                 f"found {reader.fieldnames}")
            for i, row in enumerate(reader, start=2):
                yield f"{path}:{i}", {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
    elif path.suffix.lower() in (".jsonl", ".json"):
        lines: list = []
        try:
            rows, bad = read_records(path, lines=lines)
        except RecordError as exc:
            raise InputError(str(exc)) from None
        for i, row in enumerate(rows):  # a line that is no JSON object is yielded as its problem (a string)
            where = f"{path}:{lines[i] or i + 1}"
            if i in bad:
                yield where, f"{path}:{bad[i].line}: {bad[i].reason}"
            else:
                yield where, row if isinstance(row, dict) else f"{where}: each line must be a JSON object"
    else:
        raise InputError(f"{path}: the clip list must be .csv or .jsonl")


def _seconds(where: str, row: dict, key: str) -> float | None:
    value = row.get(key)
    if value in (None, ""):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key}={value!r} is not a number of seconds") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: {key}={value!r} is not a finite number of seconds")
    if x < 0:
        raise InputError(f"{where}: {key}={x} is negative")
    return x


def derived_id(path: str | None, youtube_id: str | None, start, end) -> str:
    """``<stem>-<8 hex>``: readable, unique per (path, start, end)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem if path else str(youtube_id))[:48] or "clip"
    digest = hashlib.sha1(f"{path}|{youtube_id}|{start}|{end}".encode()).hexdigest()[:8]
    return f"{stem.lstrip('._-') or 'clip'}-{digest}"


def _clip(where: str, row: dict, folder: Path) -> Clip:
    """One row as a :class:`Clip`; raises :class:`InputError` naming ``where`` and the row's first problem."""
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise InputError(f"{where}: unknown column(s) {unknown}; allowed: {list(COLUMNS)}")
    media, yt = row.get("path") or None, row.get("youtube_id") or None
    if media is None and yt is None:
        raise InputError(f"{where}: a clip needs a 'path' (or a 'youtube_id' for the downloader)")
    start, end = _seconds(where, row, "start"), _seconds(where, row, "end")
    if start is not None and end is not None and end <= start:
        raise InputError(f"{where}: end={end} is not after start={start}")
    if media is not None:
        p = Path(str(media)).expanduser()
        media = str(p if p.is_absolute() else (folder / p).resolve())
    cid = str(row.get("id") or "") or derived_id(media, yt, start, end)
    if not SAFE_ID.match(cid):
        raise InputError(f"{where}: id {cid!r} must match {SAFE_ID.pattern} (it names files)")
    return Clip(cid, media, start, end, yt)


def read_clips(path) -> list[Clip]:
    """All clips of the list at ``path``; relative media paths resolve against its folder. Every row is
    checked; one :class:`InputError` lists every bad row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clip list not found: {path}")
    clips, seen, problems = [], {}, []
    for where, row in _rows(path):
        if isinstance(row, str):  # a line that could not be read
            problems.append(row)
            continue
        try:
            clip = _clip(where, row, path.parent)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if clip.id in seen:
            problems.append(f"{where}: duplicate id {clip.id!r} (first at {seen[clip.id]})")
            continue
        seen[clip.id] = where
        clips.append(clip)
    if problems:
        more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise InputError(f"{path}: {len(problems)} bad row(s): " + "; ".join(problems[:MAX_LISTED]) + more)
    if not clips:
        raise InputError(f"{path}: no clips")
    return clips
