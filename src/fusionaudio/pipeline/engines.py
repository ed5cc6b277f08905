"""Two engines over the same stage code (:func:`stages.base.run_batch`):

* ``local``: one process, stage after stage (one model in memory at a time), batches of clips;
* ``ray``: a Ray Data dataset of clips, one ``map_batches`` per stage with an actor pool of
  ``concurrency`` actors, each asking for ``num_cpus``/``num_gpus`` from the stage's section, so
  GPU and CPU stages scale separately. Rows stream through the stages; the results live in the
  store (a shared filesystem on a multi-node cluster), so a restart skips what is done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from fusionaudio.pipeline.config import STAGE_ORDER, PipelineConfig
from fusionaudio.pipeline.inputs import Clip
from fusionaudio.pipeline.stages import STAGE_CLASSES
from fusionaudio.pipeline.stages.base import run_batch
from fusionaudio.pipeline.store import ResultStore

log = logging.getLogger("fusionaudio.pipeline")


def stage_context(cfg: PipelineConfig) -> dict:
    enabled = cfg.enabled_stages()
    return {"tiny_models_dir": cfg.tiny_models_dir, "dataset": cfg.dataset, "output_dir": cfg.output_dir,
            "enabled": enabled, "retry_errors": cfg.retry_errors,
            "later": {name: STAGE_ORDER[STAGE_ORDER.index(name) + 1:] for name in STAGE_ORDER}}


def set_torch_threads(cfg: PipelineConfig) -> None:
    """``torch_threads`` from the config (on a shared or small CPU machine 1 avoids oversubscription)."""
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)


def make_stage(name: str, cfg: PipelineConfig):
    return STAGE_CLASSES[name](cfg.stages[name], stage_context(cfg))


def run_local(cfg: PipelineConfig, clips: list[Clip], store: ResultStore) -> dict[str, dict]:
    """Run every enabled stage over all clips; returns {stage: counts, seconds}."""
    import torch

    threads = torch.get_num_threads()
    set_torch_threads(cfg)
    try:
        return {name: _run_local_stage(cfg, name, clips, store) for name in cfg.enabled_stages()}
    finally:
        torch.set_num_threads(threads)  # leave the calling process as it was


def _run_local_stage(cfg: PipelineConfig, name: str, clips: list[Clip], store: ResultStore) -> dict:
    stage, bs = make_stage(name, cfg), int(cfg.stages[name]["batch_size"])
    t0 = time.perf_counter()
    totals: dict[str, int] = {}
    for start in range(0, len(clips), bs):
        for k, v in run_batch(stage, clips[start:start + bs], store).items():
            totals[k] = totals.get(k, 0) + v
    stage.unload()
    totals["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("stage %s: %s", name, totals)
    return totals


class StageActor:
    """A Ray Data callable class: one stage, its model loaded once per actor."""

    def __init__(self, name: str, cfg_dict: dict):
        import logging as _logging

        _logging.basicConfig(level=_logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        cfg = PipelineConfig.from_dict(cfg_dict)
        set_torch_threads(cfg)
        self.stage = make_stage(name, cfg)
        self.store = ResultStore(cfg.output_dir)

    def __call__(self, batch: dict) -> dict:
        clips = [Clip.from_dict(json.loads(s)) for s in batch["clip"]]
        run_batch(self.stage, clips, self.store)
        return batch


def worker_pythonpath() -> str:
    """PYTHONPATH for Ray workers: the folder this ``fusionaudio`` was imported from comes first, so
    the workers run the driver's code (a checkout, or an installed package at the same path)."""
    src = str(Path(__file__).resolve().parents[2])  # .../src, above fusionaudio/pipeline/engines.py
    return os.pathsep.join([src] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


def init_ray(cfg: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    opts = {"include_dashboard": bool(cfg.ray["include_dashboard"]), "log_to_driver": True,
            "runtime_env": {"env_vars": {"PYTHONPATH": worker_pythonpath()}}}
    if cfg.ray["address"]:
        opts["address"] = cfg.ray["address"]
    elif cfg.ray["num_cpus"] is not None:
        opts["num_cpus"] = cfg.ray["num_cpus"]
    ray.init(**opts)


def run_ray(cfg: PipelineConfig, clips: list[Clip], store: ResultStore) -> dict[str, dict]:
    """The same stages as Ray Data ``map_batches`` with actor pools; returns the wall time."""
    import ray

    init_ray(cfg)
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"clip": json.dumps(c.to_dict())} for c in clips])
    for name in cfg.enabled_stages():
        s = cfg.stages[name]
        opts = {"num_cpus": float(s["num_cpus"])}
        if s["num_gpus"]:
            opts["num_gpus"] = float(s["num_gpus"])
        pool = ray.data.ActorPoolStrategy(size=int(s["concurrency"]))  # (``concurrency=`` is deprecated in Ray)
        ds = ds.map_batches(StageActor, fn_constructor_args=(name, cfg.to_dict()), batch_size=int(s["batch_size"]),
                            compute=pool, batch_format="numpy", **opts)
    n = sum(len(b["clip"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
    if n != len(clips):
        raise RuntimeError(f"ray engine: {n} of {len(clips)} clips came back")
    return {"ray": {"seconds": round(time.perf_counter() - t0, 3), "clips": n}}


ENGINES = {"local": run_local, "ray": run_ray}
