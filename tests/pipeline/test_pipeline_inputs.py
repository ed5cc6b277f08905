"""The clip list and the config: what is accepted, and the errors for what is not."""

import json

import pytest

from fusionaudio.pipeline.config import ConfigError, load_config
from fusionaudio.pipeline.inputs import InputError, read_clips


def test_csv_and_jsonl_clip_lists(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "clips.csv").write_text("path,id,start,end\na.wav,first,1.5,3\nb.mp4,,,\n")
    clips = read_clips(tmp_path / "clips.csv")
    assert [c.id for c in clips][0] == "first"
    assert clips[0].path == str((tmp_path / "a.wav").resolve()) and (clips[0].start, clips[0].end) == (1.5, 3.0)
    assert clips[1].id.startswith("b-") and clips[1].start is None
    (tmp_path / "clips.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n\n" + json.dumps({"youtube_id": "xyz"}))
    clips = read_clips(tmp_path / "clips.jsonl")
    assert clips[1].path is None and clips[1].youtube_id == "xyz"
    # derived ids differ for the same file with other windows
    (tmp_path / "w.csv").write_text("path,start,end\na.wav,0,1\na.wav,1,2\n")
    assert len({c.id for c in read_clips(tmp_path / "w.csv")}) == 2


@pytest.mark.parametrize("body, message", [
    ("path,id\na.wav,x\nb.wav,x\n", "duplicate id 'x'"),
    ("path,id\na.wav,../evil\n", "must match"),
    ("path,start,end\na.wav,3,2\n", "end=2.0 is not after start=3.0"),
    ("path,start\na.wav,soon\n", "start='soon' is not a number"),
    ("id\nx\n", "'path'"),
    ("path,speed\na.wav,2\n", "unknown column(s) ['speed']"),
])
def test_bad_clip_lists_name_the_row(tmp_path, body, message):
    (tmp_path / "clips.csv").write_text(body)
    with pytest.raises(InputError) as e:
        read_clips(tmp_path / "clips.csv")
    assert message in str(e.value) and "clips.csv:" in str(e.value)


def test_every_bad_row_is_listed_in_one_error_and_nan_times_are_refused(tmp_path):
    rows = ["path,id,start,end", "good.wav,g1,0,1", "a.wav,,nan,", "b.wav,,,inf", "c.wav,,-inf,2", "d.wav,,NaN,1",
            "e.wav,,soon,", "f.wav,,3,2", ",x,,", "h.wav,../evil,,", "good.wav,g1,,", "i.wav,,-1,", "good2.wav,g2,,"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as e:
        read_clips(tmp_path / "clips.csv")
    msg = str(e.value)
    assert "10 bad row(s)" in msg, msg
    for line in range(3, 13):  # every bad row, by its line in the file
        assert f"clips.csv:{line}:" in msg, (line, msg)
    assert "clips.csv:2:" not in msg and "clips.csv:14:" not in msg
    for needle in ("start='nan' is not a finite number", "end='inf' is not a finite number",
                   "start='-inf' is not a finite number", "start='NaN' is not a finite number"):
        assert needle in msg, msg
    (tmp_path / "c.jsonl").write_text('{"path": "a.wav", "start": NaN}\n{oops\n[1]\n{"path": "b.wav"}\n'
                                      '{"path": "c.wav", "end": Infinity}\n')
    with pytest.raises(InputError) as e:
        read_clips(tmp_path / "c.jsonl")
    msg = str(e.value)
    assert "4 bad row(s)" in msg and all(f"c.jsonl:{n}:" in msg for n in (1, 2, 3, 5)), msg


def test_bad_jsonl_line(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"path": "a.wav"}\n{oops\n')
    with pytest.raises(InputError, match=r"c.jsonl:2: invalid JSON on line 2"):
        read_clips(tmp_path / "c.jsonl")


def _cfg(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_config_defaults_paths_and_errors(tmp_path):
    cfg = load_config(_cfg(tmp_path, "input: clips.csv\nstages:\n  asr: {model: models/w, language: en}\n"
                                     "  separation: {enabled: false}\n"))
    assert cfg.input == tmp_path / "clips.csv"
    assert cfg.stages["asr"]["model"] == str(tmp_path / "models/w") and cfg.stages["asr"]["language"] == "en"
    assert cfg.stages["clap_filter"]["threshold"] == 0.1 and cfg.stages["tagging"]["model"] == "tiny"
    assert "separation" not in cfg.enabled_stages() and cfg.enabled_stages()[0] == "prepare"
    with pytest.raises(ConfigError, match=r"stages.asr: unknown key\(s\) \['langauge'\]"):
        load_config(_cfg(tmp_path, "input: c.csv\nstages:\n  asr: {langauge: en}\n"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['captioner'\]"):
        load_config(_cfg(tmp_path, "input: c.csv\nstages:\n  captioner: {}\n"))
    with pytest.raises(ConfigError, match="'input'"):
        load_config(_cfg(tmp_path, "stages: {}\n"))
    with pytest.raises(ConfigError, match="engine must be"):
        load_config(_cfg(tmp_path, "input: c.csv\nengine: spark\n"))
    with pytest.raises(ConfigError, match="prepare cannot be disabled"):
        load_config(_cfg(tmp_path, "input: c.csv\nstages:\n  prepare: {enabled: false}\n"))


def test_bundled_example_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "pipeline" / "example.yaml")
    assert cfg.input.is_file() and len(read_clips(cfg.input)) == 4
    assert cfg.enabled_stages()[-1] == "qa"


def test_llm_model_is_a_path_only_for_the_local_backend(tmp_path):
    cfg = load_config(_cfg(tmp_path, "input: c.csv\nstages:\n  fusion: {backend: openai, model: Qwen/Qwen2.5-7B}\n"
                                     "  qa: {backend: local, model: llm}\n"))
    assert cfg.stages["fusion"]["model"] == "Qwen/Qwen2.5-7B" and cfg.stages["qa"]["model"] == str(tmp_path / "llm")


def test_missing_model_directory_fails_before_any_work(tmp_path):
    from fusionaudio.pipeline.run import run_pipeline

    (tmp_path / "c.csv").write_text("path\na.wav\n")
    cfg = load_config(_cfg(tmp_path, "input: c.csv\noutput_dir: %s\nstages:\n  asr: {model: nowhere/whisper}\n"
                           % (tmp_path / "out")))
    with pytest.raises(FileNotFoundError, match=r"stages.asr.model: .*nowhere/whisper not found"):
        run_pipeline(cfg)
    assert not (tmp_path / "out").exists()
