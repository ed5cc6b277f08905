"""Benchmark converters: tiny fake trees in each official layout -> evaluation records."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusionaudio.benchmarks import BUILDERS, BenchmarkError, build
from fusionaudio.evaluate.classification import load_vocabulary
from fusionaudio.evaluate.qa import ground_truth_letter, parse_options

REPO = Path(__file__).resolve().parents[2]


def put(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_esc50_and_folds(tmp_path):
    put(tmp_path, "meta/esc50.csv", "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n2-100648-A-43.wav,2,43,car_horn,False,100648,A\n")
    recs = build("esc50", tmp_path)
    assert [r["output"] for r in recs] == ["dog", "car_horn"]
    assert recs[1]["audio_id"] == (tmp_path / "audio/2-100648-A-43.wav").as_posix()
    assert set(recs[0]) >= {"audio_id", "instruction", "input", "output", "dataset", "task"}
    assert [r["output"] for r in build("esc50", tmp_path, split="2")] == ["car_horn"]
    assert build("esc50", tmp_path, relative=True)[0]["audio_id"] == "audio/1-100032-A-0.wav"
    assert {r["output"] for r in recs} <= set(load_vocabulary("ESC50"))


def test_urbansound8k(tmp_path):
    put(tmp_path, "metadata/UrbanSound8K.csv", "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        "100032-3-0-0.wav,100032,0.0,0.31,1,5,3,dog_bark\n")
    (r,) = build("urbansound8k", tmp_path, relative=True)
    assert r["audio_id"] == "audio/fold5/100032-3-0-0.wav" and r["output"] == "dog_bark"


def test_fsd50k_labels_read_with_spaces(tmp_path):
    put(tmp_path, "FSD50K.ground_truth/eval.csv", 'fname,labels,mids\n37199,"Electric_guitar,Guitar,Music",'
        '"/m/02sgy,/m/0342h,/m/04rlf"\n')
    (r,) = build("fsd50k", tmp_path, relative=True)
    assert r["output"] == "Labels: Electric guitar; Guitar; Music"
    assert r["audio_id"] == "FSD50K.eval_audio/37199.wav" and r["task"] == "cla_label"
    with pytest.raises(BenchmarkError, match="split must be eval or dev"):
        build("fsd50k", tmp_path, split="test")


def test_fsdnoisy18k_and_tau_urban(tmp_path):
    put(tmp_path, "FSDnoisy18k.meta/test.csv", "fname,label\n274679.wav,Walk_or_footsteps\n")
    (r,) = build("fsdnoisy18k", tmp_path, relative=True)
    assert r["audio_id"] == "FSDnoisy18k.audio_test/274679.wav" and r["output"] == "Walk_or_footsteps"
    put(tmp_path, "evaluation_setup/fold1_evaluate.csv",
        "filename\tscene_label\naudio/airport-lisbon-1175-44106-a.wav\tairport\naudio/metro_station-x-a.wav\tmetro_station\n")
    recs = build("tau-urban", tmp_path, relative=True)
    assert [r["output"] for r in recs] == ["airport", "metro_station"]
    assert recs[0]["audio_id"] == "audio/airport-lisbon-1175-44106-a.wav"


def test_captions_one_record_per_reference(tmp_path):
    put(tmp_path, "test.csv", "audiocap_id,youtube_id,start_time,caption\n103549,7fmOlUlwoNg,20,A man speaks\n"
        "103548,7fmOlUlwoNg,20,Someone talks\n")
    recs = build("audiocaps", tmp_path, relative=True, audio_pattern="Y{youtube_id}_{start_time}.wav")
    assert [r["audio_id"] for r in recs] == ["audio/test/Y7fmOlUlwoNg_20.wav"] * 2
    assert [r["output"] for r in recs] == ["A man speaks", "Someone talks"]
    with pytest.raises(BenchmarkError, match="unknown field"):
        build("audiocaps", tmp_path, audio_pattern="{nope}.wav")
    caps = ",".join(f"cap {i}" for i in range(1, 6))
    put(tmp_path, "clotho_captions_evaluation.csv",
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nrain.wav," + caps + "\n")
    recs = build("clotho", tmp_path, relative=True)
    assert len(recs) == 5 and recs[4]["output"] == "cap 5" and recs[0]["audio_id"] == "evaluation/rain.wav"


def test_clotho_aqa(tmp_path):
    put(tmp_path, "clotho_aqa_test.csv", "file_name,QuestionText,answer,confidence\n"
        "river_mouth3.wav,Are there waves?,yes,yes\nriver_mouth3.wav,What is flowing?,water,maybe\n")
    recs = build("clotho-aqa", tmp_path, relative=True)
    assert [(r["instruction"], r["output"], r["task"]) for r in recs] == [
        ("Are there waves?", "yes", "closed-ended"), ("What is flowing?", "water", "open-ended")]
    assert recs[0]["audio_id"] == "audio_files/river_mouth3.wav"


def test_air_bench_meta(tmp_path):
    put(tmp_path, "Foundation_meta.json", json.dumps([
        {"path": "f0638_0_sneeze.wav", "question": "What's the provenance of the sound?", "choice_a": "Sigh",
         "choice_b": "Cough", "choice_c": "Sneeze", "choice_d": "Laugh", "answer_gt": "Sneeze",
         "task_name": "vocal_sound_classification", "dataset_name": "VocalSound", "uniq_id": 1}]))
    (r,) = build("air-bench-foundation", tmp_path, relative=True)
    assert r["audio_id"] == "Foundation/vocal_sound_classification_VocalSound/f0638_0_sneeze.wav"
    assert parse_options(r["instruction"]) == ["Sigh", "Cough", "Sneeze", "Laugh"]
    assert ground_truth_letter(r["output"], r["options"]) == "C"
    put(tmp_path, "Chat_meta.json", json.dumps([
        {"path": "validation_1037.wav", "question": "Is the noise steady?", "answer_gt": "Steady.",
         "task_name": "sound_QA", "dataset_name": "clotho", "meta_info": "A machine hums."}]))
    (r,) = build("air-bench-chat", tmp_path, relative=True)
    assert r["audio_id"] == "Chat/sound_QA_clotho/validation_1037.wav" and r["meta_info"] == "A machine hums."
    put(tmp_path, "Chat_meta.json", json.dumps([{"path": "x.wav"}]))
    with pytest.raises(BenchmarkError, match=r"Chat_meta\.json: item 0: missing field"):
        build("air-bench-chat", tmp_path)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(BenchmarkError, match=r"meta/esc50\.csv: metadata file not found"):
        build("esc50", tmp_path)
    put(tmp_path, "meta/esc50.csv", "filename,fold\nx.wav,1\n")
    with pytest.raises(BenchmarkError, match=r"missing column\(s\) \['category'\]"):
        build("esc50", tmp_path)
    with pytest.raises(BenchmarkError, match="do not apply"):
        build("clotho", tmp_path, audio_pattern="x")
    assert len(BUILDERS) == 10


def test_cli_build(tmp_path):
    put(tmp_path, "FSDnoisy18k.meta/test.csv", "fname,label\n1.wav,Clapping\n")
    out = tmp_path / "o" / "fsdn.jsonl"
    proc = subprocess.run([sys.executable, "-m", "fusionaudio.benchmarks", "build", "fsdnoisy18k", "--root",
                           str(tmp_path), "--out", str(out), "--relative"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text().splitlines()[0])["output"] == "Clapping"
    proc = subprocess.run([sys.executable, "-m", "fusionaudio.benchmarks", "build", "esc50", "--root",
                           str(tmp_path), "--out", str(out)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2 and "metadata file not found" in proc.stderr
