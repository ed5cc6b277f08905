"""Outputs, rebuilt from the store after every run (idempotent, so a killed run loses nothing here):

* ``stages/<stage>.jsonl``: one result per clip (status, output, error, model, settings);
* ``records.jsonl``: the FusionAudio training records ``{audio_id, instruction, input, dataset,
  task, output}`` (one caption record plus the QA records per kept clip), readable by
  ``python -m fusionaudio.train --data_path``; ``audio_id`` is the extracted WAV, relative to the file;
* ``summary.json``: counts per stage, errors with reasons, CLAP score statistics, modality usage;
* ``clap_scores.png``: the CLAP score histogram with the threshold.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from fusionaudio.pipeline.config import STAGE_ORDER, PipelineConfig
from fusionaudio.pipeline.inputs import Clip
from fusionaudio.pipeline.store import ResultStore, atomic_write_text

CUE_STAGES = ("asr", "tagging", "audio_caption", "music_caption", "visual_caption")


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build_records(cfg: PipelineConfig, clips: list[Clip], store: ResultStore) -> list[dict]:
    records = []
    clap_on = "clap_filter" in cfg.enabled_stages()
    for clip in clips:
        fusion, clap = store.get("fusion", clip.id), store.get("clap_filter", clip.id)
        if not fusion or fusion["status"] != "ok" or (clap_on and (not clap or clap["status"] != "ok")):
            continue
        audio = os.path.relpath(store.get("prepare", clip.id)["output"]["audio"], cfg.output_dir)
        extra = {"clip_id": clip.id, "clap_score": clap["output"]["score"] if clap_on else None}
        base = {"audio_id": audio, "input": "", "dataset": cfg.dataset}
        records.append({**base, "instruction": cfg.caption_instruction, "task": "caption",
                        "output": fusion["output"]["caption"], **extra})
        qa = store.get("qa", clip.id)
        if qa and qa["status"] == "ok":
            records += [{**base, "instruction": p["question"], "task": "qa", "output": p["answer"], **extra}
                        for p in qa["output"]["pairs"]]
    return records


def modality_usage(cfg: PipelineConfig, clips: list[Clip], store: ResultStore) -> dict:
    """Per cue: on how many fused clips it was available; and the cue combinations."""
    per_cue, combos, n = Counter(), Counter(), 0
    for clip in clips:
        fusion = store.get("fusion", clip.id)
        if not fusion or fusion["status"] != "ok":
            continue
        n += 1
        cues = fusion["output"]["cues"]
        per_cue.update(cues)
        combos["+".join(cues)] += 1
    return {"fused_clips": n, "per_cue": {c: per_cue.get(c, 0) for c in CUE_STAGES},
            "share": {c: round(per_cue.get(c, 0) / n, 4) if n else 0.0 for c in CUE_STAGES},
            "combinations": dict(combos.most_common())}


def clap_histogram(scores: list[float], threshold: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(scores, bins=20, color="#4878a8")
    if threshold is not None:
        ax.axvline(threshold, color="#c44", linestyle="--", label=f"threshold {threshold}")
        ax.legend()
    ax.set_xlabel("CLAP audio-text similarity")
    ax.set_ylabel("clips")
    ax.set_title(f"CLAP scores of {len(scores)} fused captions")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(cfg: PipelineConfig, clips: list[Clip], store: ResultStore, report: dict) -> dict:
    out = Path(cfg.output_dir)
    stages, errors = {}, []
    for name in STAGE_ORDER:
        rows = [r for r in (store.get(name, c.id) for c in clips) if r is not None]
        if name not in cfg.enabled_stages() and not rows:
            stages[name] = {"enabled": False}
            continue
        atomic_write_text(out / "stages" / f"{name}.jsonl", _jsonl(rows))
        counts = Counter(r["status"] for r in rows)
        stages[name] = {"enabled": name in cfg.enabled_stages(), "model": rows[0]["model"] if rows else None,
                        **{s: counts.get(s, 0) for s in ("ok", "filtered", "error", "skipped")},
                        "pending": len(clips) - len(rows)}
        errors += [{"clip_id": r["clip_id"], "stage": name, "error": r["error"]} for r in rows if r["status"] == "error"]
    records = build_records(cfg, clips, store)
    atomic_write_text(out / "records.jsonl", _jsonl(records))
    clap_rows = [store.get("clap_filter", c.id) for c in clips]
    scores = [r["output"]["score"] for r in clap_rows if r and r["output"]]
    threshold = float(cfg.stages["clap_filter"]["threshold"])
    clap = {"n": len(scores), "threshold": threshold}
    if scores:
        clap.update(mean=round(sum(scores) / len(scores), 5), min=min(scores), max=max(scores),
                    histogram=str(out / "clap_scores.png"))
        clap_histogram(scores, threshold, out / "clap_scores.png")
    summary = {"clips": len(clips), "engine": cfg.engine, "stages": stages,
               "records": dict(Counter(r["task"] for r in records)), "clap": clap,
               "modality_usage": modality_usage(cfg, clips, store), "errors": errors, "run": report}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['clips']} clips, engine {summary['engine']}",
             f"{'stage':<15} {'ok':>5} {'filt':>5} {'error':>5} {'skip':>5}  model"]
    for name, s in summary["stages"].items():
        if not s.get("enabled", True) and "ok" not in s:
            lines.append(f"{name:<15} (disabled)")
            continue
        lines.append(f"{name:<15} {s['ok']:>5} {s['filtered']:>5} {s['error']:>5} {s['skipped']:>5}  {s['model']}")
    lines.append(f"records: {summary['records']}")
    for e in summary["errors"][:10]:
        lines.append(f"  error {e['stage']} {e['clip_id']}: {e['error']}")
    if len(summary["errors"]) > 10:
        lines.append(f"  ... {len(summary['errors']) - 10} more errors in summary.json")
    return "\n".join(lines)
