"""Run the pipeline: read the clip list, run the engine, write the outputs."""

from __future__ import annotations

from fusionaudio.errors import InputError, RunError

import json
import logging

from fusionaudio.pipeline.config import PipelineConfig
from fusionaudio.pipeline.engines import ENGINES
from fusionaudio.pipeline.inputs import read_clips
from fusionaudio.pipeline.outputs import write_outputs
from fusionaudio.pipeline.store import ResultStore, atomic_write_text

log = logging.getLogger("fusionaudio.pipeline")
#: settings that do not change results (a restart may change them freely)
RESOURCE_KEYS = ("batch_size", "device", "num_gpus", "num_cpus", "concurrency", "max_workers", "timeout_s")


class RestartMismatch(InputError):
    """A restart into an existing output folder with different stage settings."""


def _result_settings(cfg: PipelineConfig) -> dict:
    return {name: {k: v for k, v in sec.items() if k not in RESOURCE_KEYS} for name, sec in cfg.stages.items()}


def check_restart(cfg: PipelineConfig, store: ResultStore) -> None:
    """The first run records its stage settings; a restart with other settings is refused."""
    path = store.root / "stage_settings.json"
    current = _result_settings(cfg)
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(s for s in current if before.get(s) != current[s])
        if changed:
            raise RestartMismatch(
                f"{cfg.output_dir} holds results made with other settings for stage(s) {changed}; use another "
                f"output_dir, or delete {store.results}/<stage> for those stages (and the ones after them) and "
                f"{path} to recompute")
    else:
        atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True))


def run_pipeline(cfg: PipelineConfig) -> dict:
    from fusionaudio.pipeline.stages import STAGE_CLASSES

    for name in cfg.enabled_stages():
        STAGE_CLASSES[name].check_paths(name, cfg.stages[name])
        STAGE_CLASSES[name].check_environment(name, cfg.stages[name])
    clips = read_clips(cfg.input)
    store = ResultStore(cfg.output_dir)
    check_restart(cfg, store)
    log.info("%d clips from %s -> %s (engine %s, stages %s)", len(clips), cfg.input, cfg.output_dir, cfg.engine,
             ", ".join(cfg.enabled_stages()))
    report = ENGINES[cfg.engine](cfg, clips, store)
    return write_outputs(cfg, clips, store, report)


def check_some_clip_succeeded(summary: dict) -> None:
    """A run in which every clip failed (an error in some stage) did nothing useful: :class:`RunError`."""
    failed = {e["clip_id"] for e in summary["errors"]}
    if summary["clips"] and len(failed) >= summary["clips"]:
        first = summary["errors"][0]
        raise RunError(f"every clip failed ({summary['clips']} of {summary['clips']}); first: {first['stage']} "
                       f"{first['clip_id']}: {first['error']} (all errors in summary.json; errors from the environment "
                       "are retried by the next run, --retry_errors retries the others too)")
