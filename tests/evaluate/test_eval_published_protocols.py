"""The published protocols exactly: classification scored as the originals score it (each distinct text once,
float64, their order of operations), the scripts' defaults, and AIR-Bench foundation's lookup by audio file."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusionaudio.evaluate import classification as cls
from fusionaudio.evaluate import qa
from fusionaudio.evaluate.embeddings import reference_cosine
from fusionaudio.evaluate.records import EvalInputError

REPO = Path(__file__).resolve().parents[2]


def original_order_cosine(u, v) -> float:
    """The originals' cosine similarity, step by step in Python floats: the dot product and both squared
    norms added up left to right (Python 3.10's ``sum``), then dot / (sqrt(|u|^2) * sqrt(|v|^2))."""
    dot = su = sv = 0.0
    for x, y in zip(map(float, u), map(float, v)):
        dot += x * y
        su += x * x
        sv += y * y
    return dot / (math.sqrt(su) * math.sqrt(sv))


def original_order_scores(items_vecs, label_vecs, mode="accu") -> list[float]:
    """One record's scores as the originals compute them: 0.0, then each item added (or maxed) in order."""
    scores = [0.0] * len(label_vecs)
    for vec in items_vecs:
        for c, lab in enumerate(label_vecs):
            sim = original_order_cosine(vec, lab)
            scores[c] = scores[c] + sim if mode == "accu" else max(scores[c], sim)
    return scores


class TableEmbedder:
    """Fixed vectors by text; records every text it is asked for."""

    def __init__(self, table, dtype=np.float32):
        self.table, self.dtype, self.asked = table, dtype, []

    def embed(self, texts):
        self.asked += list(texts)
        return np.array([self.table[t] for t in texts], dtype=self.dtype)


def write(path, records):
    path.write_text(json.dumps(records))
    return str(path)


# ------------------------------------------------------------------------------ classification
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_cosine_is_the_original_computation_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    texts, labels = rng.standard_normal((7, 97)).astype(dtype), rng.standard_normal((5, 97)).astype(dtype)
    expected = [[original_order_cosine(t, lab) for lab in labels] for t in texts]
    np.testing.assert_array_equal(reference_cosine(texts, labels, block=3), expected)  # several row blocks
    with pytest.raises(ValueError, match="cannot be compared"):
        reference_cosine(texts, labels[:, :5])


@pytest.mark.parametrize("mode", ["accu", "max"])
def test_score_records_equals_the_original_order(mode):
    rng = np.random.default_rng(4)
    words = ["x", "y", "z", "a", "b", "c"]
    table = {cls.PREFIX + w: rng.standard_normal(33).astype(np.float32) for w in words}
    records = [["x", "y"], ["z"], ["y", "x", "z"]]
    scores = cls.score_records(records, ["a", "b", "c"], TableEmbedder(table), aggregation=mode)
    label_vecs = [table[cls.PREFIX + w] for w in "abc"]
    expected = [original_order_scores([table[cls.PREFIX + w] for w in row], label_vecs, mode) for row in records]
    np.testing.assert_array_equal(scores, expected)


def test_duplicate_answers_score_exactly_alike(tmp_path):
    rng = np.random.default_rng(0)
    answers = ["A dog barks.", "Rain falls.", "A siren wails."]
    table = {cls.PREFIX + a.lower(): rng.standard_normal(64).astype(np.float32) for a in answers}
    labels = ["dog", "rain", "siren", "wind", "bird", "car", "train"]
    table.update({cls.label_text(lab): rng.standard_normal(64).astype(np.float32) for lab in labels})
    (tmp_path / "v.csv").write_text("".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    picks = [0, 1, 0, 2, 0, 1, 2, 2, 0]
    recs = [{"output": labels[p], "prediction": answers[p]} for p in picks]
    emb = TableEmbedder(table)
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"),
                                      vocabulary=str(tmp_path / "v.csv"), embedder=emb)
    pred = np.load(Path(res["meta"]["reference_files"]["all_pred"]))
    for i, p in enumerate(picks):
        first = picks.index(p)
        assert np.array_equal(pred[i], pred[first]), f"record {i} differs from record {first} (same answer)"
    answer_texts = [t for t in emb.asked if t in {cls.PREFIX + a.lower() for a in answers}]
    assert sorted(answer_texts) == sorted(cls.PREFIX + a.lower() for a in answers)  # each distinct text once


def test_exact_two_class_tie_picks_the_original_top_class(tmp_path):
    # An answer naming two classes whose label texts embed to its two items: score(dog) = cos(d, d) + cos(r, d)
    # and score(rain) = cos(d, r) + cos(r, r) are equal mathematically; rounding decides, as in the original.
    table = {"sound of dog": [0.1, 0.1, 0.1], "sound of rain": [0.1, 0.2, 0.3]}
    (tmp_path / "v.csv").write_text("0,dog\n1,rain\n")
    recs = [{"output": "dog", "prediction": "Labels: dog; rain"}, {"output": "rain", "prediction": "rain"}]
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"),
                                      vocabulary=str(tmp_path / "v.csv"), pred_format="labels",
                                      embedder=TableEmbedder(table))
    labels = [np.float32(table["sound of dog"]), np.float32(table["sound of rain"])]
    expected = original_order_scores(labels, labels)
    assert abs(expected[0] - expected[1]) < 1e-12  # a mathematical tie, split by rounding only
    assert res["details"]["records"][0]["top1"] == ["dog", "rain"][int(np.argmax(expected))]
    pred = np.load(Path(res["meta"]["reference_files"]["all_pred"]))
    np.testing.assert_array_equal(pred[0], expected)


def test_eval_cls_script_embeds_the_whole_answer_by_default(tmp_path):
    log, stub = tmp_path / "calls.log", tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    base = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "PREDICTIONS": str(tmp_path / "p.json"), "VOCAB": "ESC50"}
    for extra in ({}, {"PRED_FORMAT": "auto"}):
        subprocess.run(["bash", str(REPO / "scripts/eval/eval_cls.sh")], env=base | extra, check=True,
                       capture_output=True)
    default, named = log.read_text().splitlines()
    assert "--pred_format caption" in default and "--pred_format auto" in named
    # and the scorer's own default embeds an answer starting "Labels:" whole, as the original's caption task
    assert cls.prediction_items("Labels: dog; rain") == ["Labels: dog; rain"]


# ------------------------------------------------------------------ AIR-Bench foundation lookup
def _instr(question, options):
    return f"Choose the most suitable answer from options to respond the question in next line.\n{question}\n" \
           f"Options: [{', '.join(options)}]"


SHARED = [  # a.wav has three questions; the last one's answer letter is C
    {"audio_id": "a.wav", "instruction": _instr("What is it?", ["dog", "cat", "cow", "pig"]), "output": "dog",
     "prediction": "A"},
    {"audio_id": "a.wav", "instruction": _instr("How many?", ["one", "two", "three", "four"]), "output": "three",
     "prediction": "C"},
    {"audio_id": "b.wav", "instruction": _instr("Where?", ["park", "road", "home", "shop"]), "output": "road",
     "prediction": "B"},
    {"audio_id": "a.wav", "instruction": _instr("Who?", ["man", "woman", "child", "robot"]), "output": "child",
     "prediction": "D"},
]


def test_answer_lookup_by_audio_id_as_foundation_score(tmp_path):
    path = write(tmp_path / "p.json", SHARED)
    own = qa.evaluate_mcq(path, str(tmp_path / "own.json"))
    assert own["metrics"]["accuracy"] == 0.75 and own["meta"]["answer_lookup"] == "question"
    assert "n_lookup_changed_answer" not in own["metrics"]
    res = qa.evaluate_mcq(path, str(tmp_path / "by_file.json"), answer_lookup="audio_id")
    m = res["metrics"]
    # every a.wav question is scored against C (the last a.wav question's answer): A wrong, C right, D wrong
    assert m["accuracy"] == 0.5 and res["meta"]["answer_lookup"] == "audio_id"
    assert m["n_lookup_other_question"] == 2 and m["n_lookup_changed_answer"] == 1
    first = next(d for d in res["details"] if d["index"] == 0)
    assert first["gt"] == "C" and first["own_gt"] == "A" and first["audio_id"] == "a.wav"
    assert json.loads((tmp_path / "by_file.json").read_text())["metrics"]["n_lookup_changed_answer"] == 1


def test_answer_lookup_errors_and_unusable_last_answer(tmp_path):
    with pytest.raises(EvalInputError, match="answer_lookup must be"):
        qa.evaluate_mcq(write(tmp_path / "p.json", SHARED), answer_lookup="file")
    no_id = [{k: v for k, v in SHARED[0].items() if k != "audio_id"}]
    with pytest.raises(EvalInputError, match=r"record 0: missing field 'audio_id'"):
        qa.evaluate_mcq(write(tmp_path / "n.json", no_id), answer_lookup="audio_id")
    bad_last = SHARED + [{"audio_id": "a.wav", "instruction": _instr("Why?", ["x", "y"]), "output": "zzz",
                          "prediction": "A"}]
    res = qa.evaluate_mcq(write(tmp_path / "b.json", bad_last), str(tmp_path / "o.json"), skip_bad_options=True,
                          answer_lookup="audio_id")
    m = res["metrics"]  # a.wav's last question has no usable answer: its other questions are left out, as there
    assert m["n_skipped_bad_options"] == 1 and m["n_skipped_lookup_no_answer"] == 3 and m["accuracy"] == 1.0


def test_eval_qa_script_answer_lookup(tmp_path):
    src = write(tmp_path / "p.json", SHARED)
    env = dict(os.environ, MODE="mcq", INPUT=src, OUTPUT=str(tmp_path / "o.json"), PYTHON=sys.executable,
               ANSWER_LOOKUP="audio_id")
    proc = subprocess.run(["bash", str(REPO / "scripts/eval/eval_qa.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o.json").read_text())["metrics"]["n_lookup_changed_answer"] == 1
    proc = subprocess.run(["bash", str(REPO / "scripts/eval/eval_qa.sh")], capture_output=True, text=True,
                          env=env | {"MODE": "yesno"}, timeout=120)
    assert proc.returncode == 2 and "ANSWER_LOOKUP applies to MODE=mcq only" in proc.stderr
