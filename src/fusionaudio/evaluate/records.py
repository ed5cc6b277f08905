"""Loading prediction files and reading their fields with clear errors.

Field conventions (shared by every evaluator):

* ``prediction`` -- the model's answer, written by ``fusionaudio.infer`` next to the
  untouched input record (override with ``pred_key``); ``null`` (inference failed for that
  record) is scored as an empty, wrong answer and counted as ``n_null_predictions``.
* ``output`` -- the ground truth, as in the training/eval records
  ``{audio_id, instruction, input, output, dataset?, task?}`` (override with ``ref_key``).

Files from the reference implementation after its ``modify_json`` step use
``pred``/``ref`` instead: pass ``pred_key="pred", ref_key="ref"``.
"""

from __future__ import annotations

from fusionaudio.errors import InputError
from fusionaudio.records import RecordError
from fusionaudio.records import load_records as read_records_strict

import os
import re
from pathlib import Path
from typing import Any

DEFAULT_PRED_KEY = "prediction"
DEFAULT_REF_KEY = "output"

_MISSING = object()


class EvalInputError(InputError):
    """A bad evaluation input: the message names the file and, where known, the record index."""


def load_records(path: str | os.PathLike) -> list[dict]:
    """Load a JSON list (``.json``) or JSON-lines (``.jsonl``) file of dict records (the shared reader,
    :mod:`fusionaudio.records`, with the evaluators' checks: objects only, at least one)."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: file not found")
    try:
        records = read_records_strict(path)
    except RecordError as exc:
        raise EvalInputError(str(exc)) from None
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise EvalInputError(f"{path}: record {i}: expected an object, got {type(rec).__name__}")
    if not records:
        raise EvalInputError(f"{path}: no records")
    return records


def load_predictions(path, pred_key: str = DEFAULT_PRED_KEY, structured: bool | str = False) -> tuple[list[dict], dict]:
    """Load a prediction file. With ``structured`` (outputs in the AudSemThinker format: ``True`` or
    ``"three"`` for ``<think>..</think><semantic_elements>..</semantic_elements><answer>..</answer>``,
    ``"two"`` for the GRPO model's ``<think>..</think><answer>..</answer>``), each prediction is replaced by
    its answer section (what the metrics score; the raw text is kept under ``raw_<pred_key>``) and two
    rates are returned for the report: ``structured_compliance`` (share that parse completely,
    :func:`fusionaudio.structured.parse_structured`) and ``structured_strict_format`` (share passing the
    upstream GRPO format check, :func:`fusionaudio.structured.strict_format`)."""
    records = load_records(path)
    if not structured:
        return records, {}
    from fusionaudio.structured import VARIANTS, answer_text, parse_structured, strict_format

    variant = "three" if structured is True else str(structured)
    if variant not in VARIANTS:
        raise EvalInputError(f"structured must be true, 'three' or 'two', not {structured!r}")
    out, complete, strict = [], 0, 0
    for i, rec in enumerate(records):
        raw = get_prediction(rec, pred_key, path, i)
        complete += bool(parse_structured(raw, variant)["complete"])
        strict += strict_format(raw, variant)
        answer = None if rec[pred_key] is None else answer_text(raw)
        out.append({**rec, pred_key: answer, "raw_" + pred_key: rec[pred_key]})
    return out, {"structured_compliance": complete / len(records),
                 "structured_strict_format": strict / len(records)}


def get_field(record: dict, key: str, path: Any, index: int, *, types=(str,), default=_MISSING):
    """Return ``record[key]`` checked against ``types``; raise :class:`EvalInputError` naming file and index."""
    if key not in record or record[key] is None:
        if default is not _MISSING:
            return default
        raise EvalInputError(
            f"{path}: record {index}: missing field {key!r} (fields present: {sorted(record)})"
        )
    value = record[key]
    if types and not isinstance(value, types):
        names = "/".join(t.__name__ for t in types)
        raise EvalInputError(
            f"{path}: record {index}: field {key!r} should be {names}, got {type(value).__name__}"
        )
    return value


def get_prediction(record: dict, key: str, path: Any, index: int) -> str:
    """The model answer. ``null`` (inference failed, e.g. unreadable audio) reads as an empty answer,
    which scores as wrong; a record without the key at all is an error."""
    if key not in record:
        raise EvalInputError(f"{path}: record {index}: missing field {key!r} (fields present: {sorted(record)})")
    if record[key] is None:
        return ""
    return get_field(record, key, path, index)


def count_null(records: list[dict], key: str) -> int:
    """How many records have ``key`` set to ``null`` (failed inference)."""
    return sum(1 for r in records if key in r and r[key] is None)


def get_text_list(record: dict, key: str, path: Any, index: int) -> list[str]:
    """Read a field that is either a string or a non-empty list of strings, as a list."""
    value = get_field(record, key, path, index, types=(str, list))
    if isinstance(value, str):
        return [value]
    if not value or not all(isinstance(v, str) for v in value):
        raise EvalInputError(f"{path}: record {index}: field {key!r} should be a non-empty list of strings")
    return list(value)


def normalize_text(text: str) -> str:
    """Lower-case, map underscores to spaces, drop surrounding punctuation and squeeze whitespace."""
    text = text.lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" .,;:!?\"'")
