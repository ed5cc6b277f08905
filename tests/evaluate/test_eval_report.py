"""Report writing/gathering and the thin eval shell wrappers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusionaudio.evaluate import report
from fusionaudio.evaluate.records import EvalInputError

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["eval_cls.sh", "eval_caption.sh", "eval_qa.sh", "eval_retrieval.sh"]


def _result(task, metrics, **extra):
    return report.make_result(task, metrics, {"input": f"/data/{task}.json", "n_records": 3}, **extra)


def test_write_report_json_and_markdown(tmp_path):
    res = _result("captioning", {"BLEU_1": 0.5, "SPICE": None, "n": 3},
                  unavailable={"SPICE": "no Stanford models"}, details=[{"clip": "a"}])
    out, md = report.write_report(res, str(tmp_path / "sub" / "cap.json"))
    loaded = json.loads(out.read_text())
    assert loaded["metrics"] == {"BLEU_1": 0.5, "SPICE": None, "n": 3} and loaded["details"] == [{"clip": "a"}]
    assert loaded["meta"]["n_records"] == 3 and "created" in loaded["meta"]
    text = md.read_text()
    assert md.name == "cap.md" and "# captioning: captioning.json" in text
    assert "| BLEU_1 | 0.5000 |" in text and "| SPICE | n/a |" in text and "| n | 3 |" in text
    assert "- SPICE: no Stanford models" in text


def test_breakdown_tables_in_markdown():
    res = _result("qa_mcq", {"accuracy": 0.5, "by_task": {"sound": {"accuracy": 1.0, "n": 2}}})
    text = report.to_markdown(res)
    assert "by_task:" in text and "| sound | 1.0000 | 2 |" in text


def test_gather_table(tmp_path):
    a = report.write_report(_result("classification", {"accuracy": 0.75, "mAP": 0.5}), str(tmp_path / "a.json"))[0]
    b = report.write_report(_result("captioning", {"BLEU_1": 0.25, "SPICE": None}), str(tmp_path / "b.json"))[0]
    table = report.gather(str(a), str(b), output=str(tmp_path / "summary.md"))
    lines = table.strip().splitlines()
    assert lines[0] == "| file | task | input | accuracy | mAP | BLEU_1 | SPICE |"
    assert lines[2] == "| a.json | classification | classification.json | 0.7500 | 0.5000 |  |  |"
    assert lines[3] == "| b.json | captioning | captioning.json |  |  | 0.2500 | n/a |"
    assert (tmp_path / "summary.md").read_text() == table


def test_gather_cli_and_errors(tmp_path):
    a = report.write_report(_result("retrieval", {"t2a_R@1": 0.1}), str(tmp_path / "r.json"))[0]
    proc = subprocess.run([sys.executable, "-m", "fusionaudio.evaluate.report", "gather", str(a),
                           "--output", str(tmp_path / "s.md")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| r.json | retrieval |" in (tmp_path / "s.md").read_text()
    with pytest.raises(EvalInputError, match="file not found"):
        report.gather(str(tmp_path / "nope.json"))
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(EvalInputError, match="not an evaluation result"):
        report.gather(str(tmp_path / "x.json"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_thin_and_require_inputs(name, tmp_path):
    path = REPO / "scripts" / "eval" / name
    text = path.read_text()
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert re.search(r"python -m fusionaudio\.(evaluate\.\w+|retrieval evaluate)", text.replace('"$PYTHON"', "python"))
    assert "/wangbenyou" not in text and "sk-" not in text and "/work/" not in text
    env = {k: v for k, v in os.environ.items() if k not in ("INPUT", "MODE", "MODEL_DIR")}
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "INPUT" in proc.stderr


def test_yesno_script_end_to_end(tmp_path):
    src = tmp_path / "p.json"
    src.write_text(json.dumps([{"audio_id": "a", "instruction": "Is it raining?", "output": "yes",
                                "prediction": "Yes."}]))
    env = dict(os.environ, MODE="yesno", INPUT=str(src), OUTPUT=str(tmp_path / "o.json"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "scripts/eval/eval_qa.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o.json").read_text())["metrics"]["accuracy"] == 1.0
