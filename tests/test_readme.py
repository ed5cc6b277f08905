"""The README's commands as a newcomer meets them: the venv step said once at the top, the marked short
commands that ``make readme-check`` (and CI) runs as written, and the shell wrappers finding ``.venv``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "ci"))
from readme_check import marked_commands  # noqa: E402

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_quick_start_says_to_activate_the_venv_before_any_python_command():
    quick = README.split("## Quick start", 1)[1]
    first_python = quick.index("python ")
    assert "source .venv/bin/activate" in quick[:first_python]


def test_the_short_commands_are_marked_for_readme_check():
    commands = marked_commands(README)
    evaluate = [c for c in commands if "demo_helper.py evaluate" in c]
    assert evaluate and all("--base_model" not in c for c in evaluate)  # runs as written: the bundled model
    suite = [c for c in commands if "synth_suite.py" in c]
    assert suite and commands.index(suite[0]) > next(i for i, c in enumerate(commands) if "suite_data" in c)
    train = next(c for c in commands if "-m fusionaudio.train" in c)
    assert "--val_set_size" in train  # the reference's default (2000) does not fit a small data set
    assert any(c.startswith("python quick_inference.py --model_path runs/ft/checkpoint-") and "--base_model" not in c
               for c in commands)
    assert any("configs/pipeline/example.yaml" in c for c in commands)


def test_marked_blocks_are_parsed_with_continuations_and_comments():
    text = ("x\n<!-- readme-check -->\n```bash\n# a comment\npython a.py --x 1 \\\n    --y 2\n\necho hi  # note\n```\n"
            "```bash\npython not_marked.py\n```\n")
    assert marked_commands(text) == ["python a.py --x 1 --y 2", "echo hi  # note"]


def test_shell_wrappers_find_the_project_venv(tmp_path):
    """scripts/eval/*.sh run ``.venv/bin/python`` of their checkout when PYTHON is not set."""
    for script in sorted((REPO / "scripts" / "eval").glob("*.sh")):
        assert 'PYTHON="$ROOT_DIR/.venv/bin/python"' in script.read_text(), script.name
    (tmp_path / "scripts" / "eval").mkdir(parents=True)
    copy = tmp_path / "scripts" / "eval" / "eval_caption.sh"
    shutil.copy(REPO / "scripts" / "eval" / "eval_caption.sh", copy)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho \"venv python $*\" > {tmp_path / 'called'}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(["bash", str(copy)], env={**env, "INPUT": "preds.json"}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "called").read_text().startswith("venv python -m fusionaudio.evaluate.captioning")


def _run_script(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_synth_suite_without_a_split_says_how_to_make_one(tmp_path):
    proc = _run_script(REPO / "scripts" / "eval" / "synth_suite.py", "--data_dir", tmp_path / "nothing_yet",
                       "--out_dir", tmp_path / "suite")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "python -m fusionaudio.demo.scenes --out_dir" in line
    assert not (tmp_path / "suite").exists()


def test_demo_helper_evaluate_needs_no_base_model(tmp_path):
    from fusionaudio.demo.scenes import generate

    generate(tmp_path / "fresh", n_train=0, n_test=2, seed=1, n_qa=1)
    proc = _run_script(REPO / "scripts" / "train" / "demo_helper.py", "evaluate", "--data_dir", tmp_path / "fresh",
                       "--limit", "4", "--output", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["clips"] == 2 and 0.0 <= metrics["attribute_accuracy"]["overall"] <= 1.0
