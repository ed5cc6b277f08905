"""The pipeline's YAML config: top-level settings plus one section per stage.

Every key of every section is checked against the stage's defaults (a misspelt key is an
error naming the section and the key, never silently ignored). Relative paths in the config
are resolved against the folder the config file is in.
"""

from __future__ import annotations

from fusionaudio.errors import InputError

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

#: Stage order; a stage only reads the results of stages before it.
STAGE_ORDER = ("prepare", "separation", "asr", "tagging", "audio_caption", "music_caption",
               "visual_caption", "fusion", "clap_filter", "qa")
#: Keys every stage section accepts (engine resources, batching, on/off).
COMMON_DEFAULTS = {"enabled": True, "batch_size": 4, "device": "cpu", "num_gpus": 0.0, "num_cpus": 0.1,
                   "concurrency": 1}
TOP_DEFAULTS = {"input": None, "output_dir": "runs/pipeline", "engine": "local", "tiny_models_dir": ".cache/pipeline_tiny",
                "dataset": "custom", "caption_instruction": "Describe the audio in detail.", "torch_threads": None, "ray": {},
                "stages": {}, "retry_errors": False}
RAY_DEFAULTS = {"address": None, "num_cpus": None, "include_dashboard": False}


class ConfigError(InputError):
    """The config file is malformed; the message names the file, section and key."""


@dataclass
class PipelineConfig:
    path: Path
    input: Path
    output_dir: Path
    engine: str
    tiny_models_dir: Path
    dataset: str
    caption_instruction: str
    torch_threads: int | None
    ray: dict
    stages: dict[str, dict] = field(default_factory=dict)
    #: recompute every stored error (errors from the environment are recomputed anyway)
    retry_errors: bool = False

    def to_dict(self) -> dict:
        """Plain data (for Ray actors and the run manifest)."""
        return {"path": str(self.path), "input": str(self.input), "output_dir": str(self.output_dir),
                "engine": self.engine, "tiny_models_dir": str(self.tiny_models_dir), "dataset": self.dataset,
                "caption_instruction": self.caption_instruction, "torch_threads": self.torch_threads, "ray": dict(self.ray), "stages": copy.deepcopy(self.stages),
                "retry_errors": self.retry_errors}

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        return cls(Path(d["path"]), Path(d["input"]), Path(d["output_dir"]), d["engine"], Path(d["tiny_models_dir"]),
                   d["dataset"], d["caption_instruction"], d["torch_threads"], dict(d["ray"]), copy.deepcopy(d["stages"]),
                   bool(d.get("retry_errors", False)))

    def enabled_stages(self) -> list[str]:
        return [s for s in STAGE_ORDER if self.stages[s]["enabled"]]


def _check_keys(where: str, given: dict, allowed: dict) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def merge_section(config_path, name: str, given: dict | None, defaults: dict) -> dict:
    """The stage section ``given`` over the stage's ``defaults`` and the common keys."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ConfigError(f"{config_path}: stages.{name} must be a mapping, not {type(given).__name__}")
    allowed = {**COMMON_DEFAULTS, **defaults}
    _check_keys(f"{config_path}: stages.{name}", given, allowed)
    return {**copy.deepcopy(allowed), **given}


def load_config(path, overrides: dict | None = None) -> PipelineConfig:
    """Read ``path`` (YAML), apply ``overrides`` (top-level keys, e.g. from the command line)."""
    from fusionaudio.pipeline.stages import STAGE_CLASSES
    from fusionaudio.pipeline.stages.base import resolve_path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    _check_keys(str(path), raw, TOP_DEFAULTS)
    top = {**TOP_DEFAULTS, **raw}
    if not top["input"]:
        raise ConfigError(f"{path}: 'input' (a CSV or JSONL of clips) is required")
    if top["engine"] not in ("local", "ray"):
        raise ConfigError(f"{path}: engine must be 'local' or 'ray', not {top['engine']!r}")
    base = path.resolve().parent
    stages_raw = top["stages"] or {}
    if not isinstance(stages_raw, dict):
        raise ConfigError(f"{path}: 'stages' must be a mapping of stage name -> section")
    _check_keys(f"{path}: stages", stages_raw, dict.fromkeys(STAGE_ORDER))
    stages = {name: merge_section(path, name, stages_raw.get(name), STAGE_CLASSES[name].DEFAULTS)
              for name in STAGE_ORDER}
    for name in STAGE_ORDER:
        STAGE_CLASSES[name].resolve_paths(stages[name], base)
    ray_cfg = top["ray"] or {}
    _check_keys(f"{path}: ray", ray_cfg, RAY_DEFAULTS)
    if not stages["prepare"]["enabled"]:
        raise ConfigError(f"{path}: stages.prepare cannot be disabled (every other stage reads its audio)")
    return PipelineConfig(path=path.resolve(), input=resolve_path(top["input"], base),
                          output_dir=resolve_path(top["output_dir"], Path.cwd()), engine=top["engine"],
                          tiny_models_dir=resolve_path(top["tiny_models_dir"], Path.cwd()),
                          dataset=str(top["dataset"]),
                          caption_instruction=str(top["caption_instruction"]),
                          torch_threads=None if top["torch_threads"] is None else int(top["torch_threads"]), ray={**RAY_DEFAULTS, **ray_cfg}, stages=stages,
                          retry_errors=bool(top["retry_errors"]))
