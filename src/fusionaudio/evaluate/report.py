"""Metric reports: one JSON + one Markdown table per evaluation, and a gatherer.

A result is a dict ``{"task", "metrics", "meta", "unavailable"?, "details"?}`` where
``metrics`` maps names to numbers (or ``None`` when a metric could not be computed, with
the reason under ``unavailable``). ``write_report(result, "x.json")`` writes ``x.json`` and
``x.md``; ``python -m fusionaudio.evaluate.report gather a.json b.json --output summary.md``
puts several results into one table.
"""

from __future__ import annotations

from fusionaudio.commands import subcommands_main

import datetime as _dt
import json
import sys
import math
from pathlib import Path

from fusionaudio.evaluate.records import EvalInputError


def make_result(task: str, metrics: dict, meta: dict, unavailable: dict | None = None, details=None) -> dict:
    """Assemble a result dict (adds a UTC timestamp and the package version to ``meta``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("fusionaudio")
    except PackageNotFoundError:  # run from a source tree that was never installed
        __version__ = "unknown (not installed)"

    meta = dict(meta)
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("fusionaudio_version", __version__)
    result = {"task": task, "metrics": metrics, "meta": meta}
    if unavailable:
        result["unavailable"] = unavailable
    if details is not None:
        result["details"] = details
    return result


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def scalar_metrics(result: dict) -> dict:
    """The top-level number-or-None entries of ``result['metrics']``."""
    return {k: v for k, v in result.get("metrics", {}).items() if v is None or isinstance(v, (int, float))}


def to_markdown(result: dict) -> str:
    """A short Markdown summary: title, metric table, unavailable metrics, metadata."""
    meta = result.get("meta", {})
    lines = [f"# {result.get('task', 'evaluation')}: {Path(str(meta.get('input', ''))).name}", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in scalar_metrics(result).items()]
    for name, table in result.get("metrics", {}).items():
        if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
            cols = list(dict.fromkeys(c for row in table.values() for c in row))
            lines += ["", f"{name}:", "", "| key | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
            lines += [f"| {k} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |" for k, row in table.items()]
    if result.get("unavailable"):
        lines += ["", "Unavailable:"] + [f"- {k}: {why}" for k, why in result["unavailable"].items()]
    lines += ["", "Metadata:"] + [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))]
    return "\n".join(lines) + "\n"


def default_output(input_path, suffix: str) -> str:
    """The report path beside an input file: ``preds.json`` + ``.cap.json`` -> ``preds.cap.json``."""
    p = Path(input_path)
    return str(p.with_name(p.stem + suffix))


def write_report(result: dict, output: str) -> tuple[Path, Path]:
    """Write ``result`` as JSON to ``output`` and its Markdown table next to it (``.md``)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    md = out.with_suffix(".md")
    md.write_text(to_markdown(result), encoding="utf-8")
    print(f"wrote {out} (metrics and details) and {md} (table)", file=sys.stderr)
    return out, md


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_result(path: str) -> dict:
    """Read a result JSON written by :func:`write_report`."""
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"{p}: file not found")
    try:
        result = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{p}: invalid JSON ({e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise EvalInputError(f"{p}: not an evaluation result (no 'metrics' object)")
    return result


def gather(*paths: str, output: str | None = None) -> str:
    """One Markdown table (a row per result file, a column per metric); written to ``output`` if given."""
    if not paths:
        raise EvalInputError("gather needs at least one result JSON")
    results = [load_result(p) for p in paths]
    columns: list[str] = []
    for r in results:
        columns += [k for k in scalar_metrics(r) if k not in columns]
    head = ["file", "task", "input"] + columns
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p, r in zip(paths, results):
        m = scalar_metrics(r)
        cells = [Path(p).name, str(r.get("task", "")), Path(str(r.get("meta", {}).get("input", ""))).name]
        cells += [_fmt(m[c]) if c in m else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(table, encoding="utf-8")
    return table


def main(argv=None) -> int:
    return subcommands_main({"gather": gather}, "python -m fusionaudio.evaluate.report", argv)

if __name__ == "__main__":
    raise SystemExit(main())
