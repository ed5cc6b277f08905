"""MMAU evaluation as AudSemThinker runs it: prompt, token-overlap scorer, breakdowns."""

import json

import pytest

from fusionaudio.evaluate import mmau
from fusionaudio.evaluate.records import EvalInputError
from fusionaudio.structured import parse_structured

CHOICES = ["Dog barking", "Cat meowing", "Car horn", "Dog growling"]


def test_string_match_by_hand():
    assert mmau.string_match("Dog barking", "a dog barking", CHOICES)
    assert mmau.string_match("Dog barking", "Dog barking loudly", CHOICES)  # extra words not in any choice
    assert not mmau.string_match("Dog barking", "dog", CHOICES)  # "barking" missing
    assert not mmau.string_match("Dog barking", "dog barking or growling", CHOICES)  # a wrong choice's word
    assert mmau.string_match("Dog growling", "DOG GROWLING.", CHOICES)  # "dog" is shared, so allowed
    assert not mmau.string_match("Car horn", "", CHOICES) and not mmau.string_match("Car horn", "!!", CHOICES)


def test_extract_answer_as_upstream():
    assert mmau.extract_answer("<think>x</think>\n<answer> Car horn </answer>") == "Car horn"
    assert mmau.extract_answer("system\n...\nassistant\n<answer>B. Car horn</answer>") == "B. Car horn"
    assert mmau.extract_answer("  no tags here ") == "no tags here"
    assert mmau.extract_answer("<answer>cut off") == "cut off"


def test_instruction_styles():
    three = mmau.mmau_instruction("What is heard?", CHOICES[:2])
    assert three.endswith("What is heard?\nChoices:\nA. Dog barking\nB. Cat meowing")
    assert "<semantic_elements>" in three and "multiple choice" in three
    two = mmau.mmau_instruction("What is heard?", CHOICES[:2], sections="two")
    assert "<semantic_elements>" not in two and "<think>" in two and "<answer>" in two
    assert mmau.mmau_instruction("Q?", ["x"], style="plain") == "Q?\nChoices:\nA. x"


def test_prepare_and_score(tmp_path):
    items = [
        {"id": "1", "audio_id": "./test-mini-audios/a.wav", "question": "Which?", "choices": CHOICES,
         "answer": "Car horn", "task": "sound", "difficulty": "easy", "sub-category": "Event"},
        {"id": "2", "audio_id": "b.wav", "question": "Which?", "choices": CHOICES, "answer": "Dog barking",
         "task": "sound", "difficulty": "hard", "sub-category": "Event"},
        {"id": "3", "audio_id": "c.wav", "question": "Genre?", "choices": ["Jazz", "Rock"], "answer": "Jazz",
         "task": "music", "difficulty": "medium", "sub-category": "Genre"},
        {"id": "4", "audio_id": "d.wav", "question": "Genre?", "choices": ["Jazz", "Rock"], "answer": "Rock",
         "task": "music", "difficulty": "medium"},
    ]
    src = tmp_path / "mmau" / "mmau-test-mini.json"
    src.parent.mkdir()
    src.write_text(json.dumps(items))
    assert mmau.prepare(str(src), str(tmp_path / "recs.json"), sections="two") == 4
    recs = json.loads((tmp_path / "recs.json").read_text())
    assert recs[0]["audio_id"] == str(tmp_path / "mmau" / "test-mini-audios" / "a.wav")
    assert recs[0]["output"] == "Car horn" and "Choices:\nA. Dog barking" in recs[0]["instruction"]
    outputs = ["<think>honk</think>\n<answer>C. Car horn</answer>", "<think>?</think>\n<answer>Cat meowing</answer>",
               "<think>sax</think><answer>Jazz</answer>", None]  # the last clip's audio was missing
    for r, o in zip(recs, outputs):
        r["prediction"] = o
    (tmp_path / "preds.json").write_text(json.dumps(recs))
    res = mmau.score(str(tmp_path / "preds.json"), str(tmp_path / "m.json"), structured="two")
    m = res["metrics"]
    assert m["accuracy"] == pytest.approx(200 / 3) and m["n_scored"] == 3 and m["n_skipped_no_audio"] == 1
    assert m["by_task"]["sound"] == {"accuracy": 50.0, "n": 2} and m["by_task"]["music"]["accuracy"] == 100.0
    assert m["by_task"]["speech"] == {"accuracy": None, "n": 0}
    assert m["by_difficulty"]["hard"]["accuracy"] == 0.0 and m["by_sub_category"]["Event"]["n"] == 2
    assert m["structured_compliance"] == 1.0 and m["structured_strict_format"] == 1.0
    assert all(parse_structured(o, "two")["complete"] for o in outputs[:3])
    items[0]["answer"] = "Horn"
    src.write_text(json.dumps(items))
    with pytest.raises(EvalInputError, match="item 0: answer 'Horn' is not one of its choices"):
        mmau.prepare(str(src), str(tmp_path / "x.json"))


def test_eval_mmau_script_calls(tmp_path):
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "calls.log"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "MMAU_JSON": str(tmp_path / "m.json"),
           "WORK": str(tmp_path / "w"), "SECTIONS": "two"}
    subprocess.run(["bash", str(repo / "scripts/eval/eval_mmau.sh")], env=env, check=True, capture_output=True)
    prep, infer, score = log.read_text().splitlines()
    assert prep.startswith("-m fusionaudio.evaluate.mmau prepare") and "--sections two" in prep
    for flag in ("--arch audsemthinker", "--num_beams 5", "--do_sample false", "--max_new_tokens 400",
                 "--prompt_mode raw"):
        assert flag in infer
    assert score.startswith("-m fusionaudio.evaluate.mmau score") and "--structured two" in score
