"""Loading and validation of training / inference records (no model or tokenizer needed).

Record format (as in the reference ``data/example/*.json``)::

    {"audio_id": "audio/x.wav", "instruction": "...", "input": "", "output": "...",
     "dataset": "...", "task": "..."}

* ``audio_id``, ``instruction``, ``output``: required strings (``audio_id`` may be
  ``null``); ``input``: optional string, ``""`` when absent; ``dataset``/``task``:
  strings if present.  Other keys are kept and ignored.
* ``audio_id`` is an absolute path or a path relative to the data file's folder.
  Text-only records use ``"empty"`` (the reference GAMA/LTU convention), ``""`` or
  ``null``.
* Files are a JSON list of records, or JSONL (one object per line, blank lines ignored).

Training should call :func:`select_records`: it raises :class:`RecordError`
listing the bad records, or with ``skip_bad=True`` returns only the good ones and
writes the report to ``report_dir``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from fusionaudio.records import BadRecord, RecordError, is_text_only, read_records

REQUIRED_FIELDS = ("audio_id", "instruction", "output")
OPTIONAL_STR_FIELDS = ("input", "dataset", "task")
MAX_LISTED = 20
logger = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_records`: indices of good records and every bad one."""

    data_path: str
    n_records: int = 0
    ok_indices: list[int] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    n_text_only: int = 0
    check_audio: bool = True
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        return (f"{self.data_path}: {self.n_records} records, {len(self.ok_indices)} ok "
                f"({self.n_text_only} text-only), {len(self.bad)} bad")

    def to_text(self, limit: int | None = None) -> str:
        """Human-readable report; lists the first ``limit`` bad records (all if None)."""
        shown = self.bad if limit is None else self.bad[:limit]
        lines = [self.summary()] + [f"  {b}" for b in shown]
        if len(self.bad) > len(shown):
            lines.append(f"  ... and {len(self.bad) - len(shown)} more bad records")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")


def resolve_audio_path(audio_id: str | None, data_path: str | Path) -> Path | None:
    """Absolute path of a record's audio (None for text-only records).

    Relative ``audio_id`` values are taken relative to the folder of ``data_path``
    (or to ``data_path`` itself if it is a directory); ``~`` is expanded.
    """
    if is_text_only(audio_id):
        return None
    p = Path(os.path.expanduser(audio_id))
    if p.is_absolute():
        return p
    base = Path(data_path)
    base = base if base.is_dir() else base.parent
    return (base / p).resolve()


def check_audio_file(path: Path, deep: bool = False) -> str | None:
    """None if ``path`` is a readable audio file, else the reason.

    The cheap check reads the header with ``soundfile.info``; ``deep=True`` also
    decodes every sample and rejects empty or non-finite audio.
    """
    if not path.exists():
        return f"audio file not found: {path}"
    if not path.is_file():
        return f"audio path is not a file: {path}"
    try:
        info = sf.info(str(path))
        if info.frames <= 0 or info.samplerate <= 0:
            return f"audio file has no samples: {path}"
        if deep:
            y, _ = sf.read(str(path), dtype="float32", always_2d=True)
            if y.size == 0:
                return f"audio file decodes to no samples: {path}"
            if not np.isfinite(y).all():
                return f"audio file has non-finite samples: {path}"
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        return f"unreadable audio file {path}: {type(e).__name__}: {e}"
    return None


def _text_problems(rec: dict) -> list[str]:
    """Strings that cannot be written out as UTF-8 (lone surrogates, from ``\\udcxx``
    escapes) or, for ``audio_id``, used as a path (a NUL byte)."""
    problems = []
    for key in REQUIRED_FIELDS + OPTIONAL_STR_FIELDS:
        value = rec.get(key)
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            problems.append(f"field '{key}' is not valid Unicode (lone surrogate at character {e.start})")
        if key == "audio_id" and "\x00" in value:
            problems.append("field 'audio_id' contains a NUL byte")
    return problems


def _record_problems(rec, data_path, check_audio, deep, require_output, cache) -> list[str]:
    if not isinstance(rec, dict):
        return [f"record is not a JSON object (got {type(rec).__name__})"]
    problems = []
    for key in REQUIRED_FIELDS:
        if key not in rec:
            if key != "output" or require_output:
                problems.append(f"missing required field '{key}'")
        elif not isinstance(rec[key], str) and not (key == "audio_id" and rec[key] is None):
            problems.append(f"field '{key}' must be a string, got {type(rec[key]).__name__}")
    for key in ("instruction",) + (("output",) if require_output else ()):
        if isinstance(rec.get(key), str) and not rec[key].strip():
            problems.append(f"field '{key}' is empty")
    for key in OPTIONAL_STR_FIELDS:
        if key in rec and not isinstance(rec[key], str):
            problems.append(f"field '{key}' must be a string, got {type(rec[key]).__name__}")
    problems += _text_problems(rec)
    aid = rec.get("audio_id")
    if problems:
        return problems
    if check_audio and isinstance(aid, str) and not is_text_only(aid):
        path = resolve_audio_path(aid, data_path)
        if path not in cache:
            cache[path] = check_audio_file(path, deep)
        if cache[path]:
            problems.append(cache[path])
    return problems


def validate_records(records: list, data_path: str | Path, check_audio: bool = True,
                     deep: bool = False, require_output: bool = True,
                     _parse_errors: dict[int, BadRecord] | None = None) -> ValidationReport:
    """Check every record; return a :class:`ValidationReport` (never raises for bad records).

    ``data_path`` is the data file (relative ``audio_id`` values resolve against its
    folder).  ``check_audio`` checks each distinct audio file once with
    ``soundfile.info``; ``deep`` decodes it fully.  ``require_output=False`` allows a
    missing/empty ``output`` (inference files).
    """
    report = ValidationReport(str(data_path), len(records), check_audio=check_audio, deep=deep)
    cache: dict[Path, str | None] = {}
    for i, rec in enumerate(records):
        if _parse_errors and i in _parse_errors:
            report.bad.append(_parse_errors[i])
            continue
        problems = _record_problems(rec, data_path, check_audio, deep, require_output, cache)
        aid = rec.get("audio_id") if isinstance(rec, dict) else None
        if problems:
            report.bad.append(BadRecord(i, "; ".join(problems), aid))
        else:
            report.ok_indices.append(i)
            report.n_text_only += is_text_only(aid)
    return report


def select_records(path: str | Path, skip_bad: bool = False, report_dir: str | Path | None = None,
                   check_audio: bool = True, deep: bool = False,
                   require_output: bool = True) -> tuple[list[dict], ValidationReport]:
    """Load and validate ``path``; return ``(good records, report)``.

    * default: any bad record raises :class:`RecordError` whose message lists
      the first 20 bad records and the total count (``.report`` has all of them);
    * ``skip_bad=True``: bad records are dropped (with a logged warning).

    If ``report_dir`` is given the report is written there as
    ``data_validation_report.json`` and ``.txt`` (in both modes).  Returned records
    are shallow copies with ``input`` set to ``""`` where it was absent.  Having no
    good record at all always raises.
    """
    records, parse_errors = read_records(path)
    report = validate_records(records, path, check_audio, deep, require_output, parse_errors)
    if report_dir is not None:
        report.to_json(Path(report_dir) / "data_validation_report.json")
        (Path(report_dir) / "data_validation_report.txt").write_text(report.to_text() + "\n", encoding="utf-8",
                                                                     errors="backslashreplace")
    if report.bad and not skip_bad:
        raise RecordError(
            f"{len(report.bad)} bad records in {path} (fix them or pass skip_bad to drop them)\n"
            + report.to_text(limit=MAX_LISTED), report)
    if not report.ok_indices:
        raise RecordError(f"no usable records in {path}\n" + report.to_text(limit=MAX_LISTED), report)
    if report.bad:
        where = f"; report in {report_dir}" if report_dir is not None else ""
        logger.warning("skipping %d bad records of %d in %s%s", len(report.bad), report.n_records, path, where)
    good = [dict(records[i]) for i in report.ok_indices]
    for rec in good:
        rec.setdefault("input", "")
    return good, report
