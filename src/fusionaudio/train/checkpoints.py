"""Stage 4 of training: checkpoints.

A checkpoint ``checkpoint-N`` holds

* ``adapter_model.safetensors``: the trained tensors only, under this project's names
  (``load_model(base, checkpoint)`` loads it), with ``fusionaudio_config.json`` (the model
  config the run trained; ``"lora": null`` for a run without LoRA) and
  ``training_args.json`` (the options, the base directory, the trained tensor names);
* the engine's state, written by ``accelerate``'s ``save_state``: ``optimizer.bin``,
  ``scheduler.bin``, ``random_states_<rank>.pkl`` (read back with
  ``torch.load(weights_only=True)``). Under DDP or one process the engine's own copy of
  the model is left out (the trained tensors above are the weights); under FSDP /
  DeepSpeed the engine writes its sharded model and optimizer as it needs them;
* ``trainer_state.json``: the step, the data position, the log history.

Every checkpoint is written to ``.checkpoint-N.tmp`` and renamed to ``checkpoint-N``
when complete, so a kill during a save leaves at worst a temporary folder (removed by
the next save). ``resume_from_checkpoint="last"`` takes the newest complete checkpoint.
Non-finite weights are never written.
"""

from __future__ import annotations

from fusionaudio.errors import RunError

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from fusionaudio.gama.loading import CheckpointError, load_finetuned
from fusionaudio.train.model_setup import ARGS_NAME, WEIGHTS_NAME

log = logging.getLogger("fusionaudio.train")

CONFIG_NAME = "fusionaudio_config.json"
STATE_NAME = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


class NonFiniteError(RunError):
    """Training produced a non-finite loss, gradient or weight."""


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir`` that were completely written, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
             if (m := _CKPT.match(p.name)) and p.is_dir() and (p / STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(output_dir: Path) -> None:
    """Remove the ``.checkpoint-N.tmp`` folders a killed save left behind."""
    for p in Path(output_dir).glob(".checkpoint-*.tmp"):
        log.warning("removing %s, an incomplete checkpoint of an earlier run", p)
        shutil.rmtree(p, ignore_errors=True)


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    bad = [n for n, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"not saving {where}: {len(bad)} trained tensor(s) hold NaN/inf, e.g. {bad[:5]}")


def save_trained(model, names: list[str], out_dir: Path, args: dict, state: dict | None = None) -> None:
    """Write the trained tensors (``adapter_model.safetensors``), the model config and the
    run's options to ``out_dir``: loadable by ``load_model(base, out_dir)``. ``state``: the
    tensors to write (default: ``model``'s parameters ``names``)."""
    from safetensors.torch import save_file

    if state is None:
        params = dict(model.named_parameters())
        state = {n: params[n].detach().contiguous().cpu() for n in names}
    check_finite(state, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    lora = "none" if model.config.lora is None else "peft LoRA on " + ",".join(model.config.lora.target_modules)
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt", "layout": "fusionaudio",
                                                             "content": "trained parameters only", "lora": lora})
    model.config.save(out_dir / CONFIG_NAME)
    (out_dir / ARGS_NAME).write_text(json.dumps(args, indent=2, default=str) + "\n", encoding="utf-8")


def trained_state(accelerator, wrapped, names: list[str]) -> dict[str, torch.Tensor] | None:
    """The trained tensors on CPU (on the main process; None elsewhere). FSDP gathers the
    full state dict (a collective: every rank calls this)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        full = accelerator.get_state_dict(wrapped)
        if not accelerator.is_main_process:
            return None
        return {n: full[f"model.{n}"].detach().contiguous().cpu() for n in names}
    if not accelerator.is_main_process:
        return None
    params = dict(accelerator.unwrap_model(wrapped).model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in names}


def save_checkpoint(accelerator, wrapped, model, names, out: Path, step: int, run_args: dict, state: dict,
                    save_total_limit: int | None = None) -> Path:
    """Write ``out/checkpoint-{step}`` atomically (every rank calls this)."""
    final, tmp = out / f"checkpoint-{step}", out / f".checkpoint-{step}.tmp"
    weights = trained_state(accelerator, wrapped, names)
    if accelerator.is_main_process:
        if weights is not None:
            check_finite(weights, str(final))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        save_trained(model, names, tmp, run_args, weights)
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")  # last: marks it complete
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        log.info("saved %s (step %d)", final, step)
        if save_total_limit:
            for old in complete_checkpoints(out)[:-int(save_total_limit)]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def drop_engine_model_weights(accelerator) -> None:
    """Under DDP / one process, keep the engine from writing (and reading) its own full copy
    of the model: the checkpoint's trained tensors are the weights."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return

    def on_save(models, weights, output_dir):
        weights.clear()

    def on_load(models, input_dir):
        models.clear()

    accelerator.register_save_state_pre_hook(on_save)
    accelerator.register_load_state_pre_hook(on_load)


def resolve_resume(value, output_dir: Path) -> Path | None:
    """The checkpoint ``resume_from_checkpoint`` names: a path, or ``last``/True (the newest
    complete ``checkpoint-N`` in ``output_dir``)."""
    if value in (None, False, "", "False", "false"):
        return None
    if value is True or str(value).lower() in ("true", "last"):
        found = complete_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint={value!r}: no complete checkpoint-* in {output_dir}")
        return found[-1]
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume_from_checkpoint not found: {path}")
    return path


def resume_weights(path: Path, model, names: list[str]) -> bool:
    """Load a checkpoint's trained tensors into ``model`` (before the engine wraps it);
    True for a full checkpoint (``trainer_state.json``: the run continues from its step),
    False for a weights-only file or folder (training starts at step 0)."""
    full = path.is_dir() and (path / STATE_NAME).is_file()
    loaded = set(load_finetuned(model, path))
    if not full:
        log.info("%s holds weights only: loaded them, training starts at step 0", path)
    elif loaded != set(names):
        raise CheckpointError(f"{path}: holds other trained tensors than trainable_params selects "
                              f"({len(loaded)} vs {len(names)}); resume with the options it was trained with")
    return full


def resume_engine(path: Path, accelerator, state: dict) -> dict:
    """Restore the optimizer, scheduler, RNG and step of a full checkpoint (after the engine
    wrapped the model); returns the run state to continue from."""
    saved = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    changed = [k for k in ("steps_per_epoch", "total_steps", "world_size", "gradient_accumulation_steps", "seed",
                           "n_train") if saved.get(k) != state[k]]
    if changed:
        log.warning("resuming with different %s than %s was trained with: the run continues but is not an exact "
                    "continuation", ", ".join(changed), path)
    if (path / "optimizer.pt").is_file() and not any(path.glob("optimizer*.bin")) and not any(path.glob("pytorch_model*")):
        raise CheckpointError(f"{path}: written before training moved to accelerate (optimizer.pt); it cannot be "
                              f"resumed exactly: start from its weights with --base_model {path / WEIGHTS_NAME}")
    rng = path / f"random_states_{accelerator.process_index}.pkl"
    if not rng.is_file():
        log.warning("%s: no %s; random state not restored", path, rng.name)
    accelerator.load_state(str(path))
    log.info("resumed from %s at step %d", path, saved["global_step"])
    return {**state, "global_step": saved["global_step"], "log_history": saved.get("log_history", [])}
