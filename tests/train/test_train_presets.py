"""GAMA's staged recipe as presets (configs/train/gama_stage1..5.json): the five stages run
in sequence on the tiny model, each from the previous stage's output, in-process and
through scripts/train/train.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionaudio.train import load_preset, train

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(batch_size=4, micro_batch_size=4, max_steps=1, save_steps=0, progress=False, logging_steps=0,
             cache_fbank=True, seed=0, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from fusionaudio.demo.scenes import generate

    out = tmp_path_factory.mktemp("stage_data")
    generate(out, n_train=2, n_test=0, seed=6)
    return out / "train.json"


def test_presets_hold_the_reference_values():
    s1, s2, s5 = (load_preset(f"gama_stage{k}") for k in (1, 2, 5))
    assert (s1["learning_rate"], s1["cutoff_len"], s1["val_set_size"], s1["trainable_params"]) == (1e-3, 108, 0, "qformer")
    assert s1["lora_target_modules"] == "none" and s1["group_by_length"] is True
    assert (s2["learning_rate"], s2["micro_batch_size"], s2["trainable_params"]) == (1e-4, 1, "qformer_all")
    assert (s5["batch_size"], s5["micro_batch_size"]) == (164, 2)
    assert all((REPO / "configs" / "train" / f"gama_stage{k}.json").is_file() for k in range(1, 6))
    with pytest.raises(ValueError, match="unknown training preset"):
        load_preset("gama_stage9")


def test_five_stages_in_sequence(tiny_base_dir, data, tmp_path):
    from fusionaudio.gama.loading import load_model

    start = str(tiny_base_dir)
    for k in range(1, 6):
        out = tmp_path / f"stage{k}"
        train(preset=f"gama_stage{k}", base_model=start, data_path=str(data), output_dir=str(out), **SMALL)
        args = json.loads((out / "training_args.json").read_text())
        assert args["learning_rate"] == (1e-3 if k == 1 else 1e-4) and args["cutoff_len"] == 108
        assert args["lora"] == ("none" if k == 1 else ["q_proj", "v_proj"])
        assert args["trainable_params"] == ("qformer" if k == 1 else "qformer_all")
        assert args["batch_size"] == 4  # an option given explicitly beats the preset
        model, _ = load_model(tiny_base_dir, out)
        assert any(".lora_" in n for n, _ in model.named_parameters()) == (k > 1)
        start = str(out)


def test_train_sh_runs_stages_from_one_to_the_next(tiny_base_dir, data, tmp_path):
    env = {**os.environ, "STAGES": "1 2", "BASE_MODEL": str(tiny_base_dir), "DATA_PATH": str(data),
           "OUTPUT_DIR": str(tmp_path / "runs"), "NPROC": "1", "MASTER_PORT": "29731", "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable}
    cmd = ["bash", str(REPO / "scripts" / "train" / "train.sh"), "--max_steps=1", "--batch_size=4",
           "--micro_batch_size=4", "--progress=False"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s2 = json.loads((tmp_path / "runs" / "stage2" / "training_args.json").read_text())
    assert Path(s2["start_checkpoint"]) == tmp_path / "runs" / "stage1" and s2["lora"] == ["q_proj", "v_proj"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "stage 1: already finished" in again.stdout
