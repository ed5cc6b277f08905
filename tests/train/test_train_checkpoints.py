"""fusionaudio.train.checkpoints: atomic saves (a kill during a save resumes exactly from the
newest complete checkpoint), save_total_limit, and runs without LoRA (train, save, load,
and a LoRA run starting from one, as GAMA's stage 2 starts from stage 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fusionaudio.train import train
from fusionaudio.train.checkpoints import complete_checkpoints, resolve_resume

FAST = dict(val_set_size=0, warmup_steps=0, eval_steps=0, progress=False, cache_fbank=True, logging_steps=0,
            seed=0, batch_size=4, micro_batch_size=4, learning_rate=2e-3, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from fusionaudio.demo.scenes import generate

    out = tmp_path_factory.mktemp("ckpt_data")
    generate(out, n_train=3, n_test=0, seed=4)
    return out / "train.json"


KILLER = """
import os, signal, sys
import fusionaudio.train.checkpoints as ck
real = ck.save_trained
def dying(model, names, out_dir, args, state=None):
    real(model, names, out_dir, args, state)
    if out_dir.name == ".checkpoint-2.tmp":  # weights written, trainer_state.json not yet
        os.kill(os.getpid(), signal.SIGKILL)
ck.save_trained = dying
from fusionaudio.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_a_save_resumes_exactly_from_the_last_complete_checkpoint(tiny_base_dir, data, tmp_path):
    args = dict(base_model=str(tiny_base_dir), data_path=str(data), max_steps=3, save_steps=1, lora_dropout=0.1,
                **FAST)
    train(output_dir=str(tmp_path / "whole"), **args)
    killed = tmp_path / "killed"
    cli = [f"--{k}={v}" for k, v in args.items()] + [f"--output_dir={killed}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same sums as in here
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER), *cli], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (killed / ".checkpoint-2.tmp").is_dir() and not (killed / "checkpoint-2").exists()
    assert [p.name for p in complete_checkpoints(killed)] == ["checkpoint-1"]
    assert resolve_resume("last", killed) == killed / "checkpoint-1"

    train(output_dir=str(killed), resume_from_checkpoint="last", **args)
    assert not (killed / ".checkpoint-2.tmp").exists()  # the stale temporary is gone
    assert [p.name for p in complete_checkpoints(killed)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (tmp_path / "whole", killed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    whole = [json.loads(x)["loss"] for x in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    state = json.loads((killed / "trainer_state.json").read_text())
    assert [h["loss"] for h in state["log_history"]] == pytest.approx(whole, abs=1e-6)


def test_save_total_limit_keeps_the_newest(tiny_base_dir, data, tmp_path):
    train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(tmp_path), max_steps=3, save_steps=1,
          save_total_limit=2, **FAST)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    # a checkpoint of the trainer before accelerate (optimizer.pt) is refused for an exact resume
    old = tmp_path / "checkpoint-3"
    (old / "optimizer.bin").rename(old / "optimizer.pt")
    from fusionaudio.gama.loading import CheckpointError

    with pytest.raises(CheckpointError, match="optimizer.pt.*--base_model"):
        train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(tmp_path / "again"), max_steps=4,
              save_steps=0, resume_from_checkpoint=str(old), **FAST)


def test_no_lora_run_trains_saves_loads_and_starts_a_lora_stage(tiny_base_dir, data, tmp_path):
    from fusionaudio.gama.loading import load_model

    stage1 = tmp_path / "stage1"
    train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(stage1), max_steps=2, save_steps=0,
          lora_target_modules="['dummy']", trainable_params="qformer", **FAST)
    saved = load_file(str(stage1 / "adapter_model.safetensors"))
    assert saved and not any(".lora_" in k for k in saved)
    assert json.loads((stage1 / "fusionaudio_config.json").read_text())["lora"] is None
    assert json.loads((stage1 / "training_args.json").read_text())["lora"] == "none"
    model, _ = load_model(tiny_base_dir, stage1)
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in saved.items())

    stage2 = tmp_path / "stage2"  # starts from stage 1's tensors, with a fresh LoRA
    train(base_model=str(stage1), data_path=str(data), output_dir=str(stage2), max_steps=1, save_steps=0,
          learning_rate=0.0, **{k: v for k, v in FAST.items() if k != "learning_rate"})
    out = load_file(str(stage2 / "adapter_model.safetensors"))
    assert any(".lora_" in k for k in out)
    assert all(torch.equal(out[k], v) for k, v in saved.items())  # lr 0: stage 1's values carried over
