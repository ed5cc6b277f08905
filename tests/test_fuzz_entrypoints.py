"""The fuzz corpus (tests/fuzz_corpus.py) through the entry points: batch inference, the
quick_inference command line and training. Every input gets its outcome; nothing is dropped,
substituted or allowed to stop the others."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusionaudio import infer
from fuzz_corpus import make_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("fuzz_entry"))


def _records(cases) -> list[dict]:
    return [{"audio_id": str(p), "instruction": "Describe the audio.", "input": "", "output": "x"} for p, _ in cases]


def test_infer_gives_every_corpus_file_its_outcome(corpus, tiny_base_dir, tmp_path):
    data = tmp_path / "fuzz.json"
    data.write_text(json.dumps(_records(corpus)))
    out = tmp_path / "preds.json"
    infer.main(["--json_input", str(data), "--json_output", str(out), "--base_model", str(tiny_base_dir),
                "--batch_size", "8", "--loader_workers", "0", "--no_progress", "--do_sample", "False",
                "--max_new_tokens", "2", "--device", "cpu"])
    results = json.loads(out.read_text())
    assert [r["audio_id"] for r in results] == [str(p) for p, _ in corpus]  # all, in input order
    wrong = []
    for (path, expected), r in zip(corpus, results):
        if expected == "ok":
            ok = r["error"] is None and isinstance(r["prediction"], str)
        else:
            ok = r["prediction"] is None and str(path) in r["error"] and re.search(expected, r["error"])
        if not ok:
            wrong.append((path.name, expected, r["error"]))
    assert not wrong, wrong


def test_quick_inference_json_prints_every_input_and_fails_when_any_failed(corpus, tiny_base_dir):
    picked = [c for c in corpus if c[1] == "ok"][:2] + [c for c in corpus if c[1] != "ok"][::6]
    cmd = [sys.executable, str(REPO / "quick_inference.py"), "--base_model", str(tiny_base_dir), "--device", "cpu",
           "--greedy", "--max_tokens", "2", "--json", "--audio", *[str(p) for p, _ in picked]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    printed = json.loads(proc.stdout)
    assert len(printed) == len(picked)
    for (path, expected), entry in zip(picked, printed):
        text = json.dumps(entry)
        assert str(path) in text or json.dumps(str(path)) in text
        if expected == "ok":
            assert entry.get("error") in (None, "") and isinstance(entry.get("response"), str), entry
        else:
            assert re.search(expected, entry["error"]), entry


def test_training_skips_and_reports_every_bad_corpus_file(corpus, tiny_base_dir, tmp_path):
    from fusionaudio.train import train

    good = [c for c in corpus if c[1] == "ok"][:4]
    bad = [c for c in corpus if c[1] != "ok" and "fifo" not in c[0].name]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(_records(good + bad)))
    summary = train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(tmp_path / "run"),
                    skip_bad_records=True, max_steps=1, val_set_size=0, warmup_steps=0, save_steps=0,
                    eval_steps=0, progress=False, logging_steps=0, seed=0, batch_size=4, micro_batch_size=4,
                    device="cpu")
    assert summary["global_step"] == 1
    reports = " ".join(p.read_text() for p in (tmp_path / "run").glob("*.txt"))
    missed = [p.name for p, _ in bad if p.name not in reports]
    assert not missed, missed
    assert not any(p.name in reports for p, _ in good)
