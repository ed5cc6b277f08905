"""Evaluators score the <answer> section of structured outputs and report format compliance."""

from __future__ import annotations

import json

import pytest

from fusionaudio.evaluate.captioning import evaluate_captioning
from fusionaudio.evaluate.qa import evaluate_yesno

STRUCTURED = [
    "<think>a dog, outdoors</think><semantic_elements>who: a dog</semantic_elements><answer>a dog barks loudly</answer>",
    "<think>rain</think><semantic_elements>what: rain</semantic_elements><answer>rain falls on a roof",  # unclosed
    "<THINK>x</THINK><semantic_elements>how: engine</semantic_elements><answer>a car engine idles</answer>",
]
PLAIN = ["a dog barks loudly", "rain falls on a roof", "a car engine idles"]
REFS = ["a dog is barking loudly", "rain falling on a roof", "an engine idling"]


def _write(tmp_path, name, preds, refs=REFS):
    path = tmp_path / name
    path.write_text(json.dumps([{"audio_id": f"c{i}.wav", "instruction": "Describe.", "output": r, "prediction": p}
                                for i, (p, r) in enumerate(zip(preds, refs))]))
    return path


def test_captioning_scores_answer_section_and_reports_compliance(tmp_path):
    structured = evaluate_captioning(str(_write(tmp_path, "s.json", STRUCTURED)), metrics="bleu,cider",
                                     tokenizer="simple", structured=True)["metrics"]
    plain = evaluate_captioning(str(_write(tmp_path, "p.json", PLAIN)), metrics="bleu,cider",
                                tokenizer="simple")["metrics"]
    assert structured["structured_compliance"] == pytest.approx(2 / 3)
    for key in ("BLEU_1", "BLEU_4", "CIDEr"):
        assert structured[key] == pytest.approx(plain[key])
    raw = evaluate_captioning(str(_write(tmp_path, "r.json", STRUCTURED)), metrics="bleu", tokenizer="simple")
    assert "structured_compliance" not in raw["metrics"]


def test_yesno_uses_answer_section(tmp_path):
    preds = ["<think>no dog heard</think><semantic_elements>-</semantic_elements><answer>Yes.</answer>",
             "<think>yes it is loud</think><semantic_elements>-</semantic_elements><answer>No</answer>"]
    path = _write(tmp_path, "yn.json", preds, refs=["yes", "no"])
    metrics = evaluate_yesno(str(path), structured=True)["metrics"]
    assert metrics["accuracy"] == 1.0 and metrics["structured_compliance"] == 1.0
    assert evaluate_yesno(str(path))["metrics"]["accuracy"] == 0.0  # the raw text starts with the wrong word


def test_two_section_outputs_and_strict_rate(tmp_path):
    preds = ["<think>wet</think>\n<answer>Yes.</answer>", "Sure. <think>dry</think><answer>No</answer>"]
    path = _write(tmp_path, "two.json", preds, refs=["yes", "no"])
    m = evaluate_yesno(str(path), structured="two")["metrics"]
    assert m["accuracy"] == 1.0 and m["structured_compliance"] == 1.0
    assert m["structured_strict_format"] == 0.5  # the second has text before its blocks
    assert evaluate_yesno(str(path), structured=True)["metrics"]["structured_compliance"] == 0.0
