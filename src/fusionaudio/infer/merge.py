"""The merge: every input record once, in input order, from the shard files (``json_output`` and
``<json_output>.errors.json``), written atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fusionaudio.infer import journal
from fusionaudio.infer.records import MAX_LISTED, InferError, final_record, make_items, read_input

log = logging.getLogger("fusionaudio.infer")


def check_paths(json_input, json_output, work_dir: Path | None = None) -> None:
    """Refuse an output (or work dir) that is the input file."""
    src = Path(json_input).resolve()
    for what, p in (("--json_output", json_output), ("--work_dir", work_dir)):
        if p is not None and Path(p).resolve() == src:
            raise InferError(f"{what} {p} is the input file: refusing to overwrite the input")


def merge(json_input, json_output, work_dir=None, answer_field: str = "prediction", lock: bool = True) -> int:
    """Write ``json_output`` (every input record once, in input order) and ``<json_output>.errors.json``
    from the shard files. Returns 0, or 1 (and writes nothing) when records are missing."""
    work_dir = Path(work_dir) if work_dir else journal.default_work_dir(json_output)
    check_paths(json_input, json_output, work_dir)
    if not work_dir.is_dir():
        raise InferError(f"work dir {work_dir} not found (run inference first, or pass --work_dir)")
    held = journal.RunLock(work_dir, exclusive=False, what="merge", output=json_output) if lock else None
    try:
        return _merge(json_input, Path(json_output), work_dir, answer_field)
    finally:
        if held:
            held.close()


def _merge(json_input, json_output: Path, work_dir: Path, answer_field: str) -> int:
    journal.remove_stale_tmp(json_output.parent, [json_output.name, journal.errors_path(json_output).name])
    records, nested = read_input(json_input)
    items = make_items(records, json_input)
    done = journal.read_all_shards(work_dir)
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
    out = [final_record(r, answer_field, nested) for r in out]
    if json_output.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    else:
        text = json.dumps(out, ensure_ascii=False, indent=2) + "\n"
    journal.write_atomic(json_output, text)
    report = {"json_input": str(json_input), "json_output": str(json_output), "n_records": len(out),
              "n_errors": len(errors), "errors": errors}
    journal.write_atomic(journal.errors_path(json_output), json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    log.info("wrote %d records to %s (%d with errors, listed in %s)", len(out), json_output, len(errors),
             journal.errors_path(json_output))
    if errors:
        log.warning("%d records have no prediction, e.g. record %d: %s", len(errors), errors[0]["index"],
                    errors[0]["error"])
    return 0


