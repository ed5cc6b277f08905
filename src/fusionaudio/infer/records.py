"""Input records: reading and checking the input file, record ids, audio paths, output records.

Two input layouts are read:

* flat records ``{audio_id, instruction, input?, output?, ...}`` (one question each);
* GAMA's CompA-R layout, as ``gama_inf.py`` reads it: ``{audio_id, caption?, timestamp_events?,
  instruction_output: [{instruction, output}, ...]}``. Each pair is one question (flattened in file
  order) and the merged output is ``gama_inf.py``'s flat list ``{audio_id, instruction, scene_caption,
  prediction, timestamp_events, ref}`` (plus this project's ``record_id``, ``error``, ``audio_info``).
"""

from __future__ import annotations

from fusionaudio.errors import InputError

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MAX_LISTED = 20
#: Fields the output adds to each input record (replacing same-named input fields).
OUTPUT_FIELDS = ("record_id", "prediction", "error", "audio_info", "structured")
NESTED_KEY = "instruction_output"


class InferError(InputError):
    """A user-facing failure (bad input, inconsistent work dir, ...): printed as one line."""


def record_id(index: int, record: dict) -> str:
    """Stable id: the position in the input file plus a hash of the record's content."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{index}-{hashlib.sha1(blob.encode('utf-8')).hexdigest()[:12]}"


def _bad_listing(path, bad: list[str]) -> InferError:
    more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return InferError(f"--json_input {path}: {len(bad)} bad records:\n  " + "\n  ".join(bad[:MAX_LISTED]) + more)


def is_nested(records: list) -> bool:
    """True for GAMA CompA-R records (``instruction_output`` lists)."""
    return any(isinstance(r, dict) and NESTED_KEY in r for r in records)


def flatten_nested(records: list, path) -> list[dict]:
    """One flat record per (record, instruction) pair of CompA-R records, in file order."""
    flat, bad = [], []
    for i, rec in enumerate(records):
        pairs = rec.get(NESTED_KEY) if isinstance(rec, dict) else None
        if not isinstance(pairs, list) or not pairs:
            bad.append(f"record {i}: '{NESTED_KEY}' must be a non-empty list of {{instruction, output}}")
            continue
        parent = {k: v for k, v in rec.items() if k != NESTED_KEY}
        for k, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                bad.append(f"record {i}: {NESTED_KEY}[{k}] is not a JSON object")
                continue
            if not isinstance(pair.get("instruction"), str):
                bad.append(f"record {i}: {NESTED_KEY}[{k}]: 'instruction' must be a string, "
                           f"got {type(pair.get('instruction')).__name__}")
                continue
            flat.append({**parent, "instruction": pair["instruction"], "output": pair.get("output")})
    if bad:
        raise _bad_listing(path, bad)
    return flat


def check_records(records: list, path) -> None:
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
        elif isinstance(rec["audio_id"], str) and "\x00" in rec["audio_id"]:
            bad.append(f"record {i}: 'audio_id' contains a NUL byte")
        if rec.get("input") is not None and not isinstance(rec["input"], str):
            bad.append(f"record {i}: 'input' must be a string, got {type(rec['input']).__name__}")
    if bad:
        raise _bad_listing(path, bad)


def read_input(path) -> tuple[list[dict], bool]:
    """(flat records, nested) of ``path`` (JSON list or JSONL), checked: each an object with a string
    ``instruction``, an ``audio_id`` (string, or null for text only) and, if present, a string (or
    null) ``input``. ``nested``: the file holds CompA-R records (flattened here)."""
    from fusionaudio.records import RecordError, load_records

    path = Path(path)
    if not path.is_file():
        raise InferError(f"--json_input {path}: file not found")
    try:
        records = load_records(path)
    except (RecordError, UnicodeDecodeError) as exc:
        raise InferError(f"--json_input {path}: {exc}") from None
    except OSError as exc:
        raise InferError(f"--json_input {path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(records, list):
        raise InferError(f"--json_input {path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise InferError(f"--json_input {path}: no records")
    nested = is_nested(records)
    if nested:
        records = flatten_nested(records, path)
    check_records(records, path)
    return records, nested


def load_input(path) -> list[dict]:
    """The flat records of ``path`` (see :func:`read_input`)."""
    return read_input(path)[0]


# --------------------------------------------------------------------------- audio paths


def parse_path_map(text: str) -> tuple[str, str]:
    """``OLD=NEW`` -> ``(OLD, NEW)`` (for ``--path_map``)."""
    import argparse

    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW (a path prefix and its replacement), got {text!r}")
    return old, new


@dataclass(frozen=True)
class PathResolver:
    """Where a record's ``audio_id`` points: ``--path_map OLD=NEW`` prefixes are replaced first (the
    first that matches wins), then a relative id is taken relative to ``audio_root`` (default: the
    input file's folder)."""

    json_input: str
    audio_root: str | None = None
    path_map: tuple[tuple[str, str], ...] = ()

    def __call__(self, audio_id) -> Path | None:
        from fusionaudio.records import is_text_only

        if is_text_only(audio_id):
            return None
        for old, new in self.path_map:
            if audio_id.startswith(old):
                audio_id = new + audio_id[len(old):]
                break
        p = Path(os.path.expanduser(audio_id))
        if p.is_absolute():
            return p
        base = Path(self.audio_root) if self.audio_root else Path(self.json_input).parent
        return Path(os.path.abspath(base / p))


def resolver_from_args(args) -> PathResolver:
    return PathResolver(str(args.json_input), getattr(args, "audio_root", None),
                        tuple(getattr(args, "path_map", None) or ()))


@dataclass
class Item:
    """One record to answer."""

    index: int
    record_id: str
    record: dict
    audio_path: Path | None  # None: text only


def make_items(records: list[dict], json_input, resolver: PathResolver | None = None) -> list[Item]:
    resolver = resolver or PathResolver(str(json_input))
    return [Item(i, record_id(i, r), r, resolver(r["audio_id"])) for i, r in enumerate(records)]


# --------------------------------------------------------------------------- output records


def output_record(item: Item, result: dict, structured: bool) -> dict:
    """The shard form of a result: the input record plus the output fields."""
    out = {**item.record, "record_id": item.record_id, **result}
    if structured:
        from fusionaudio.structured import parse_structured

        out["structured"] = None if result["prediction"] is None else parse_structured(result["prediction"])
    return out


def is_valid_result(entry_id: str, record) -> bool:
    """A shard entry's ``record`` is a finished result of record ``entry_id``: either a string prediction
    or a string error (and, when it names a record id, that one)."""
    if not isinstance(record, dict) or record.get("record_id", entry_id) != entry_id:
        return False
    if not ("prediction" in record and "error" in record):
        return False
    pred, err = record["prediction"], record["error"]
    return (isinstance(pred, str) and err is None) or (pred is None and isinstance(err, str))


def final_record(record: dict, answer_field: str = "prediction", nested: bool = False) -> dict:
    """The merged-output form of one finished record.

    ``answer_field="output"`` writes the answer where the original scripts did (overwriting the
    ground-truth ``output``); ``nested`` writes ``gama_inf.py``'s CompA-R fields."""
    if nested:
        out = {"audio_id": record.get("audio_id"), "instruction": record.get("instruction"),
               "scene_caption": record.get("caption"), "prediction": record.get("prediction"),
               "timestamp_events": record.get("timestamp_events"), "ref": record.get("output")}
        return {**out, **{k: record[k] for k in ("record_id", "error", "audio_info", "structured") if k in record}}
    if answer_field == "prediction":
        return record
    out = dict(record)
    out[answer_field] = out.pop("prediction")
    return out
