"""The one JSON / JSONL record reader, used by train, infer, evaluate, audsem and the pipeline.

Files are a JSON list of objects or JSONL (one object per line; blank lines ignored). Each caller keeps its
own schema checks on top; what is shared here is reading, the error type and the text-only convention:

* :func:`read_records` -- ``(records, bad)``: an unparsable JSONL line becomes ``None`` at its place and a
  :class:`BadRecord` naming its line (so indices stay aligned with the file); a whole-file problem raises;
* :func:`load_records` -- the same, strict: any bad line raises :class:`RecordError` naming it;
* :func:`is_text_only` -- ``None``, ``""`` and ``"empty"`` (the reference's ``audio_id`` for no audio).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fusionaudio.errors import InputError

#: audio ids that mean "no audio" (the reference data uses "empty").
TEXT_ONLY = (None, "", "empty")


@dataclass
class BadRecord:
    """One rejected record: its 0-based position in the file, the reasons, and where known
    its ``audio_id`` and (JSONL) 1-based line number."""

    index: int
    reason: str
    audio_id: object = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"record {self.index}" + (f" (line {self.line})" if self.line else "")
        aid = f" audio_id={self.audio_id!r}" if self.audio_id is not None else ""
        return f"{where}{aid}: {self.reason}"


class RecordError(InputError):
    """An unreadable record file or a bad record; ``.report`` holds a validation report when there is one."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


def _decode(raw: bytes, path, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: {what} is not UTF-8 text (bad byte at offset {e.start})") from None


def read_records(path: str | Path, lines: list | None = None) -> tuple[list, dict[int, BadRecord]]:
    """Parse a JSON-list or JSONL file; unparseable or non-UTF-8 JSONL lines become ``None``
    placeholders plus a :class:`BadRecord` (so indices stay aligned with the file). ``lines``, when given,
    is filled with each record's 1-based line number (JSONL) or ``None`` (a JSON list)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise RecordError(f"{path}: cannot read the data file: {e.strerror or e}") from None
    if raw.lstrip().startswith(b"["):
        text = _decode(raw, path, "the file")
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise RecordError(f"{path}: JSON nested too deeply") from None
        if not isinstance(records, list):
            raise RecordError(f"{path}: expected a JSON list of records")
        if lines is not None:
            lines.extend([None] * len(records))
        return records, {}
    records, errors = [], {}
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        if lines is not None:
            lines.append(lineno)
        try:
            records.append(json.loads(_decode(line, path, f"line {lineno}")))
        except RecordError as e:
            errors[len(records)] = BadRecord(len(records), str(e).split(": ", 1)[1], line=lineno)
            records.append(None)
        except (json.JSONDecodeError, RecursionError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            errors[len(records)] = BadRecord(len(records), f"invalid JSON on line {lineno}: {msg}", line=lineno)
            records.append(None)
    return records, errors


def load_records(path: str | Path) -> list[dict]:
    """Read records from a JSON list or a JSONL file (strict: a bad JSONL line raises
    :class:`RecordError` naming the line).  Records are returned as stored."""
    records, errors = read_records(path)
    if errors:
        raise RecordError(f"{path}: " + "; ".join(b.reason for b in errors.values()))
    return records


def is_text_only(audio_id) -> bool:
    """True for the text-only markers ``None``, ``""`` and ``"empty"``."""
    return audio_id is None or (isinstance(audio_id, str) and audio_id.strip() in TEXT_ONLY[1:])
