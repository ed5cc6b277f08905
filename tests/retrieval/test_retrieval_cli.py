"""``python -m fusionaudio.retrieval``: every error is one ``error:`` line (a missing model directory or
checkpoint too), and ``train --help`` lists its flags."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.retrieval.cli import main


@pytest.fixture()
def records(tmp_path):
    sf.write(str(tmp_path / "a.wav"), (0.1 * np.sin(np.arange(16000) / 3)).astype("float32"), 16000)
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([{"audio_id": "a.wav", "output": c} for c in ("one", "two", "three", "four", "five")]))
    return path


@pytest.mark.parametrize("case", ["clap_eval", "clap_train", "ase"])
def test_a_missing_model_is_one_error_line(case, records, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = {"clap_eval": ["evaluate", "--arch", "clap", "--model_dir", "no_clap", "--input", str(records)],
            "clap_train": ["train", "--model_dir", "no_clap", "--train_json", str(records), "--output_dir", "out"],
            "ase": ["evaluate", "--arch", "ase", "--checkpoint", "no_such.pt", "--text_model", "no_bert",
                    "--input", str(records)]}[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert ("no_such.pt" if case == "ase" else "no_clap") in lines[0]


def test_train_help_lists_its_flags():
    proc = subprocess.run([sys.executable, "-m", "fusionaudio.retrieval", "train", "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--train_json", "--model_dir", "--output_dir", "--epochs", "--batch_size", "--lr", "--val_json"):
        assert flag in proc.stdout
