"""What a newcomer sees while training: a line for each silent step before the first one (checking the
data, loading the model), the engine in words (not accelerate's ``NO``), where each checkpoint went and
none of accelerate's per-file lines, and a too-large ``val_set_size`` naming the value to pass."""

from __future__ import annotations

import json
import logging

import pytest

from fusionaudio.errors import UsageError
from fusionaudio.train import train


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from fusionaudio.demo.scenes import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=4, n_test=0, seed=5)
    return out / "train.json"


def test_training_says_what_it_does(tiny_base_dir, small_data, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO):
        train(base_model=str(tiny_base_dir), data_path=str(small_data), output_dir=str(tmp_path), batch_size=4,
              micro_batch_size=4, max_steps=2, val_set_size=2, warmup_steps=0, save_steps=1, eval_steps=0,
              progress=False, logging_steps=0, seed=0)
    out = capsys.readouterr().out
    lines = out.splitlines()
    checking = next(i for i, line in enumerate(lines) if line.startswith(f"checking the records of {small_data}"))
    loading = next(i for i, line in enumerate(lines) if line.startswith(f"loading the model from {tiny_base_dir}"))
    counts = next(i for i, line in enumerate(lines) if line.startswith("trainable params:"))
    assert checking < loading < counts  # each slow step is announced before it starts
    assert "one process on cpu" in out and "NO," not in out and "process(es)" not in out
    saved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("saved ")]
    assert saved == [f"saved {tmp_path / 'checkpoint-1'} (step 1)", f"saved {tmp_path / 'checkpoint-2'} (step 2)"]
    assert not [r for r in caplog.records if r.name.startswith("accelerate") and r.levelno < logging.WARNING]


def test_a_val_set_size_too_large_for_the_data_says_what_to_pass(tiny_base_dir, small_data, tmp_path):
    n = len(json.loads(small_data.read_text()))
    with pytest.raises(UsageError, match=rf"val_set_size=2000 leaves no training data: .* has {n} usable records; "
                                         rf"pass --val_set_size {n // 10} \(a tenth of them\) or --val_set_size 0"):
        train(base_model=str(tiny_base_dir), data_path=str(small_data), output_dir=str(tmp_path), progress=False)
