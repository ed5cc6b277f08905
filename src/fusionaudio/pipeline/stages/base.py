"""The stage interface and the one batch runner both engines use.

A stage is a small class with one config section (``DEFAULTS``), a lazily loaded model and
``process(items)``: one output dict (or an exception) per item. ``run_batch`` does the rest the
same way under the local and the Ray engine: skip what the store already has, record why a clip
is skipped, run the model on the rest, and write each clip's result atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fusionaudio.pipeline.inputs import Clip
from fusionaudio.pipeline.store import ResultStore

log = logging.getLogger("fusionaudio.pipeline")


class StageError(RuntimeError):
    """One clip failed in one stage; the message is recorded as the clip's error.

    ``environment=True`` marks a failure of the machine rather than the clip (a missing program, a
    refused connection, a timeout): such a result is recomputed by the next run.
    """

    def __init__(self, message: str = "", environment: bool = False):
        super().__init__(message)
        self.environment = environment


def resolve_path(value, base: Path) -> Path:
    """A configured path: ``~`` expanded; a relative one taken from ``base`` (the config file's folder)."""
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p)


def is_environment_error(e: BaseException) -> bool:
    """A failure of the surroundings (retried by the next run), not of the clip's content (kept)."""
    return bool(getattr(e, "environment", False)) or isinstance(e, (TimeoutError, ConnectionError))


class Filtered(Exception):
    """The clip was computed but does not pass (recorded with status ``filtered``)."""

    def __init__(self, output: dict, reason: str):
        super().__init__(reason)
        self.output = output


@dataclass
class Item:
    clip: Clip
    upstream: dict  # stage name -> result record (only stages listed in ``reads``)
    media_dir: Path

    def ok(self, stage: str) -> dict | None:
        """The upstream stage's output if it succeeded, else None."""
        rec = self.upstream.get(stage)
        return rec["output"] if rec and rec["status"] == "ok" else None


class Stage:
    name = ""
    #: upstream stages whose results this stage reads
    reads: tuple[str, ...] = ()
    #: upstream stages that must have succeeded (else this clip is skipped here)
    requires: tuple[str, ...] = ()
    DEFAULTS: dict = {}
    #: keys of the section that are paths (resolved against the config's folder)
    PATH_KEYS: tuple[str, ...] = ()

    def __init__(self, cfg: dict, context: dict):
        self.cfg = cfg
        self.context = context  # {"tiny_models_dir": Path, "dataset": str, "output_dir": Path}
        self._loaded = False

    @classmethod
    def path_keys(cls, section: dict) -> tuple[str, ...]:
        """The keys of ``section`` that name local files or directories."""
        return cls.PATH_KEYS

    @classmethod
    def resolve_paths(cls, section: dict, base: Path) -> None:
        for key in cls.path_keys(section):
            value = section.get(key)
            if value not in (None, "", "tiny"):
                section[key] = str(resolve_path(value, base))

    @classmethod
    def check_paths(cls, name: str, section: dict) -> None:
        """Fail before any work when a configured model directory or template is missing."""
        for key in cls.path_keys(section):
            value = section.get(key)
            if value not in (None, "", "tiny") and not Path(value).exists():
                raise FileNotFoundError(f"stages.{name}.{key}: {value} not found (only local paths are loaded)")

    @classmethod
    def check_environment(cls, name: str, section: dict) -> None:
        """Fail before the first clip when a program this stage needs is missing (one clear error)."""

    # -- to be provided by stages ---------------------------------------------------------
    def model_name(self) -> str | None:
        return self.cfg.get("model")

    def settings(self) -> dict:
        skip = {"enabled", "batch_size", "device", "num_gpus", "num_cpus", "concurrency", "model"}
        return {k: v for k, v in self.cfg.items() if k not in skip}

    def skip_reason(self, item: Item) -> str | None:
        """Why this stage does not apply to the clip (recorded as ``skipped``), or None."""
        return None

    def load(self) -> None:
        """Load the model (called once, only when some clip needs this stage)."""

    def process(self, items: list[Item]) -> list:
        """One output dict, :class:`Filtered` or exception per item, in order."""
        raise NotImplementedError

    def unload(self) -> None:
        """Free the model (the local engine runs one stage at a time)."""

    # -- shared -----------------------------------------------------------------------------
    def info(self) -> dict:
        return {"model": self.model_name(), "settings": self.settings()}

    def ensure_loaded(self) -> None:
        if not self._loaded:
            t0 = time.perf_counter()
            self.load()
            self._loaded = True
            log.info("stage %s: model %s loaded in %.1f s", self.name, self.model_name(), time.perf_counter() - t0)

    def _upstream_skip(self, item: Item) -> str | None:
        enabled = self.context.get("enabled")
        for dep in self.requires:
            if enabled is not None and dep not in enabled and dep != "fusion":
                continue  # a disabled optional stage (clap_filter) does not block the ones after it
            rec = item.upstream.get(dep)
            if rec is None:
                return f"no {dep} result"
            if rec["status"] != "ok":
                return f"{dep} {rec['status']}" + (f": {rec['error']}" if rec.get("error") else "")
        return self.skip_reason(item)


def _process_safely(stage: Stage, items: list[Item]) -> list:
    """``stage.process``; a whole-batch exception is retried per item to isolate the bad clip."""
    try:
        outs = stage.process(items)
        if len(outs) != len(items):
            raise RuntimeError(f"stage {stage.name} returned {len(outs)} results for {len(items)} clips")
        return outs
    except Exception as e:  # noqa: BLE001 -- any model failure becomes clip errors
        if len(items) == 1:
            return [e]
        log.warning("stage %s: batch of %d failed (%s); retrying clip by clip", stage.name, len(items), e)
        return [_process_safely(stage, [it])[0] for it in items]


def _error_text(e: BaseException) -> str:
    media = any(c.__name__ == "MediaError" for c in type(e).__mro__)
    return str(e) if isinstance(e, StageError) or media else f"{type(e).__name__}: {e}"


def is_done(rec: dict | None, retry_errors: bool = False) -> bool:
    """A stored result that stands: anything but an error from the environment (or, with
    ``retry_errors``, any error)."""
    if rec is None:
        return False
    return rec["status"] != "error" or not (retry_errors or rec.get("retry"))


def run_batch(stage: Stage, clips: list[Clip], store: ResultStore) -> dict[str, int]:
    """Run ``stage`` on the clips that have no standing result yet; returns counts by status (+ 'done_before').

    A recomputed error also drops the clip's results of the later stages (``context["later"]``), which
    were made from it."""
    counts = {"done_before": 0, "ok": 0, "error": 0, "skipped": 0, "filtered": 0}
    todo: list[Item] = []
    retry_errors = bool(stage.context.get("retry_errors"))
    for clip in clips:
        before = store.get(stage.name, clip.id)
        if is_done(before, retry_errors):
            counts["done_before"] += 1
            continue
        if before is not None:
            store.drop(clip.id, stage.context.get("later", {}).get(stage.name, ()))
        upstream = {s: store.get(s, clip.id) for s in stage.reads}
        item = Item(clip, {k: v for k, v in upstream.items() if v is not None}, store.media_dir(clip.id))
        reason = stage._upstream_skip(item)
        if reason is not None:
            store.put(stage.name, clip.id, "skipped", error=reason, info=stage.info())
            counts["skipped"] += 1
        else:
            todo.append(item)
    if not todo:
        return counts
    stage.ensure_loaded()
    t0 = time.perf_counter()
    outs = _process_safely(stage, todo)
    per_clip = (time.perf_counter() - t0) / len(todo)
    for item, out in zip(todo, outs):
        if isinstance(out, Filtered):
            status, output, error = "filtered", out.output, str(out)
        elif isinstance(out, BaseException):
            status, output, error = "error", None, _error_text(out)
            log.warning("stage %s, clip %s: %s", stage.name, item.clip.id, error)
        else:
            status, output, error = "ok", out, None
        info = {**stage.info(), **({"retry": True} if status == "error" and is_environment_error(out) else {})}
        store.put(stage.name, item.clip.id, status, output=output, error=error, info=info, seconds=per_clip)
        counts[status] += 1
    return counts
