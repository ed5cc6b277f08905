"""Batch inference on the original scripts' files: --answer_field, --audio_root, --path_map, GAMA CompA-R
nested records, --repetition_penalty, and num_beams for AudSemThinker."""

from __future__ import annotations

import json

import pytest

from fusionaudio import infer

GREEDY = ["--do_sample", "False", "--max_new_tokens", "5", "--device", "cpu", "--no_progress", "--loader_workers", "0"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, audio_files):
    d = tmp_path_factory.mktemp("moved") / "new_root"
    d.mkdir()
    for f in audio_files:
        (d / f.name).write_bytes(f.read_bytes())
    return d


@pytest.fixture(scope="module")
def engine(tiny_base_dir):
    from fusionaudio.gama.inference import FusionAudioInference

    return FusionAudioInference(tiny_base_dir, device="cpu")


def _answers(engine, pairs, **gen):
    from fusionaudio.gama.inference import Request

    requests = [Request(q, None if p is None else engine.load_audio(p)[0]) for p, q in pairs]
    return engine.generate(requests, batch_size=1, do_sample=False, max_new_tokens=5, **gen)


def test_path_map_audio_root_and_answer_field(clips, tiny_base_dir, engine, tmp_path):
    records = [{"audio_id": "/fs/nexus-projects/old/a.wav", "instruction": "Describe.", "output": "truth a"},
               {"audio_id": "b.wav", "instruction": "Pitch?", "output": "truth b"},
               {"audio_id": "empty", "instruction": "Hi?", "output": "truth c"}]
    path = tmp_path / "orig.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "preds.json"
    argv = ["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir), *GREEDY,
            "--path_map", f"/fs/nexus-projects/old={clips}", "--audio_root", str(clips), "--answer_field", "output"]
    assert infer.main(argv) == 0
    preds = json.loads(out.read_text())
    expected = _answers(engine, [(clips / "a.wav", "Describe."), (clips / "b.wav", "Pitch?"), (None, "Hi?")])
    assert [p["output"] for p in preds] == expected  # the answer where the original wrote it
    assert all("prediction" not in p and p["error"] is None for p in preds)
    assert [p["audio_id"] for p in preds] == [r["audio_id"] for r in records]  # ids as given
    # `merge --answer_field prediction` writes the default layout from the same shard files
    plain = tmp_path / "plain.json"
    assert infer.main(["merge", "--json_input", str(path), "--json_output", str(plain), "--work_dir",
                       str(infer.default_work_dir(out))]) == 0
    rows = json.loads(plain.read_text())
    assert [r["prediction"] for r in rows] == expected and [r["output"] for r in rows] == ["truth a", "truth b", "truth c"]
    # without the map the absolute path is missing: that record's error, naming the original path
    out2 = tmp_path / "nomap.json"
    assert infer.main(["--json_input", str(path), "--json_output", str(out2), "--base_model", str(tiny_base_dir),
                       *GREEDY, "--audio_root", str(clips)]) == 0
    rows = json.loads(out2.read_text())
    assert "/fs/nexus-projects/old/a.wav" in rows[0]["error"] and rows[1]["prediction"] == expected[1]


def test_gama_compa_r_nested_records(clips, tiny_base_dir, engine, tmp_path):
    records = [{"audio_id": str(clips / "a.wav"), "caption": "a tone", "timestamp_events": "[0-2] tone",
                "instruction_output": [{"instruction": "What happens?", "output": "a tone plays"},
                                       {"instruction": "Is it loud?", "output": "no"}]},
               {"audio_id": str(clips / "c.flac"), "caption": "low hum", "timestamp_events": "[0-1] hum",
                "instruction_output": [{"instruction": "Describe.", "output": "a hum"}]}]
    path = tmp_path / "compa_r.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "preds.json"
    assert infer.main(["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir),
                       *GREEDY, "--repetition_penalty", "1.1"]) == 0
    preds = json.loads(out.read_text())
    expected = _answers(engine, [(clips / "a.wav", "What happens?"), (clips / "a.wav", "Is it loud?"),
                                 (clips / "c.flac", "Describe.")], repetition_penalty=1.1)
    assert [{k: p[k] for k in ("audio_id", "instruction", "scene_caption", "prediction", "timestamp_events", "ref")}
            for p in preds] == [
        {"audio_id": str(clips / "a.wav"), "instruction": "What happens?", "scene_caption": "a tone",
         "prediction": expected[0], "timestamp_events": "[0-2] tone", "ref": "a tone plays"},
        {"audio_id": str(clips / "a.wav"), "instruction": "Is it loud?", "scene_caption": "a tone",
         "prediction": expected[1], "timestamp_events": "[0-2] tone", "ref": "no"},
        {"audio_id": str(clips / "c.flac"), "instruction": "Describe.", "scene_caption": "low hum",
         "prediction": expected[2], "timestamp_events": "[0-1] hum", "ref": "a hum"}]
    settings = json.loads((infer.default_work_dir(out) / "run_config.json").read_text())["settings"]
    assert settings["generation.repetition_penalty"] == 1.1
    assert expected != _answers(engine, [(clips / "a.wav", "What happens?"), (clips / "a.wav", "Is it loud?"),
                                         (clips / "c.flac", "Describe.")])  # the penalty changes the answers


def test_nested_records_with_a_bad_pair_are_named(tmp_path, caplog, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"audio_id": "empty", "instruction_output": []},
                                {"audio_id": "empty", "instruction_output": [{"instruction": 3}]}]))
    assert infer.main(["--json_input", str(path), "--json_output", str(tmp_path / "o.json")]) == 2
    err = caplog.text + capsys.readouterr().err
    assert "record 0: 'instruction_output' must be a non-empty list" in err
    assert "'instruction' must be a string" in err


def test_path_map_parsing():
    from fusionaudio.infer.records import PathResolver

    r = PathResolver("/data/in.json", "/clips", (("/old/", "/new/"), ("/old", "/other")))
    assert str(r("/old/x/a.wav")) == "/new/x/a.wav"
    assert str(r("rel/a.wav")) == "/clips/rel/a.wav"
    assert r("empty") is None
    assert str(PathResolver("/data/in.json")("a.wav")) == "/data/a.wav"
    with pytest.raises(SystemExit):
        infer.build_parser().parse_args(["--json_input", "i", "--json_output", "o", "--path_map", "noequals"])


def test_audsemthinker_num_beams_through_infer(tmp_path, audio_files):
    from fusionaudio.audsem import AudSemThinkerInference
    from fusionaudio.audsem.tiny import build_tiny_checkpoint

    omni = build_tiny_checkpoint(tmp_path / "omni", full_omni=True)
    records = [{"audio_id": str(audio_files[0]), "instruction": "Describe."},
               {"audio_id": "empty", "instruction": "Hello?"}]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "o.json"
    assert infer.main(["--json_input", str(path), "--json_output", str(out), "--base_model", str(omni),
                       "--arch", "audsemthinker", "--num_beams", "3", "--do_sample", "False", "--max_new_tokens", "6",
                       "--device", "cpu", "--no_progress", "--batch_size", "1", "--resampler", "sinc"]) == 0
    preds = json.loads(out.read_text())
    engine = AudSemThinkerInference(omni, resampler="sinc")
    expected = [engine.predict(r["audio_id"], r["instruction"], do_sample=False, max_new_tokens=6, num_beams=3)
                for r in records]
    assert [p["prediction"] for p in preds] == expected
    settings = json.loads((infer.default_work_dir(out) / "run_config.json").read_text())["settings"]
    assert settings["generation.num_beams"] == 3 and settings["resampler"] == "sinc"
