"""Logging a run: ``log.jsonl`` and the console, trackers (``report_to``: accelerate's
tensorboard / wandb trackers, off by default) and the loss curve."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("fusionaudio.train")
TRACKERS = ("tensorboard", "wandb")


def parse_report_to(report_to) -> list[str]:
    """``none`` | ``tensorboard`` | ``wandb`` | ``all`` | a comma-separated list."""
    if isinstance(report_to, (list, tuple)):
        names = {str(s).strip() for s in report_to}
    else:
        names = {s.strip() for s in str(report_to or "none").strip("[]").split(",")}
    names -= {"none", "", "None"}
    if "all" in names:
        names = (names - {"all"}) | set(TRACKERS)
    unknown = names - set(TRACKERS)
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {sorted(unknown)} (none, tensorboard, wandb, all)")
    return sorted(names)


def start_trackers(accelerator, trackers: list[str], project: str, run_name: str, out: Path, options: dict) -> None:
    """``accelerator.init_trackers`` with the run's scalar options as its config."""
    if not trackers:
        return
    config = {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool))}
    init = {"wandb": {"name": run_name or None, "dir": str(out)}} if "wandb" in trackers else {}
    accelerator.init_trackers(project, config=config, init_kwargs=init)


class RunLog:
    """``log.jsonl`` (every step), the console (every ``logging_steps``), a progress bar and
    the trackers; all on the main process only."""

    def __init__(self, accelerator, out: Path, total_steps: int, start: int, logging_steps: int, progress: bool):
        self.accelerator, self.logging_steps = accelerator, logging_steps
        self.main = accelerator.is_main_process
        self.file = open(out / "log.jsonl", "a", encoding="utf-8") if self.main else None
        self.bar = None
        if self.main and progress:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True,
                            mininterval=0.1 if sys.stderr.isatty() else 30.0)

    def write(self, entry: dict) -> None:
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
        if not self.main:
            return
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['learning_rate']:.2e}")
        if self.logging_steps and entry["step"] % self.logging_steps == 0:
            msg = json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()})
            (self.bar.write if self.bar is not None else print)(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def plot_loss(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no loss curve")
        return
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
