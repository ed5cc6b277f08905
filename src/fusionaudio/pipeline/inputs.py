"""The clip list: a CSV or JSONL with ``path`` (audio or video), optional ``id``, ``start``, ``end``
(seconds) and ``youtube_id`` (used only when the downloader is on).

Malformed rows (no path, unreadable numbers, end before start, duplicate or unsafe ids) stop the run
with a message naming the file and the row. A path that does not exist is *not* an input error: it
becomes that clip's ``prepare`` error, so the other clips continue.
"""

from __future__ import annotations

from fusionaudio.errors import InputError as BaseInputError

from fusionaudio.records import RecordError, read_records

import csv
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
COLUMNS = ("path", "id", "start", "end", "youtube_id")


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
        problems = [f"{path}:{b.line}: {b.reason}" for b in bad.values()]
        problems += [f"{path}:{lines[i] or i + 1}: each line must be a JSON object" for i, row in enumerate(rows)
                     if i not in bad and not isinstance(row, dict)]
        if problems:
            raise InputError(f"{path}: {len(problems)} bad line(s): " + "; ".join(problems[:20]))
        for i, row in enumerate(rows):
            yield f"{path}:{lines[i] or i + 1}", row
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
    if x < 0:
        raise InputError(f"{where}: {key}={x} is negative")
    return x


def derived_id(path: str | None, youtube_id: str | None, start, end) -> str:
    """``<stem>-<8 hex>``: readable, unique per (path, start, end)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem if path else str(youtube_id))[:48] or "clip"
    digest = hashlib.sha1(f"{path}|{youtube_id}|{start}|{end}".encode()).hexdigest()[:8]
    return f"{stem.lstrip('._-') or 'clip'}-{digest}"


def read_clips(path) -> list[Clip]:
    """All clips of the list at ``path``; relative media paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clip list not found: {path}")
    clips, seen = [], {}
    for where, row in _rows(path):
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
            media = str(p if p.is_absolute() else (path.parent / p).resolve())
        cid = str(row.get("id") or "") or derived_id(media, yt, start, end)
        if not SAFE_ID.match(cid):
            raise InputError(f"{where}: id {cid!r} must match {SAFE_ID.pattern} (it names files)")
        if cid in seen:
            raise InputError(f"{where}: duplicate id {cid!r} (first at {seen[cid]})")
        seen[cid] = where
        clips.append(Clip(cid, media, start, end, yt))
    if not clips:
        raise InputError(f"{path}: no clips")
    return clips
