"""Tests for fusionaudio.gama.data: loading, validation report, select_records."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.records import RecordError, load_records
from fusionaudio.gama.data import resolve_audio_path, select_records, validate_records

REPO = Path(__file__).resolve().parents[2]


def _rec(audio_id="a.wav", **kw):
    return {"audio_id": audio_id, "instruction": "Describe the audio.", "input": "", "output": "A tone.",
            "dataset": "t", "task": "caption", **kw}


@pytest.fixture()
def folder(tmp_path):
    sf.write(str(tmp_path / "a.wav"), np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00not really a wav file" * 4)
    sf.write(str(tmp_path / "nan.wav"), np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return tmp_path


def _write_json(path, recs):
    path.write_text(json.dumps(recs))
    return path


def test_load_json_and_jsonl(folder):
    recs = [_rec(), _rec(output="B.")]
    assert load_records(_write_json(folder / "d.json", recs)) == recs
    (folder / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    assert load_records(folder / "d.jsonl") == recs


def test_jsonl_bad_line_named(folder):
    p = folder / "d.jsonl"
    p.write_text(json.dumps(_rec()) + "\n\n" + '{"audio_id": "a.wav", oops}\n' + json.dumps(_rec()) + "\n")
    with pytest.raises(RecordError, match="line 3"):
        load_records(p)
    recs, report = select_records(p, skip_bad=True)
    assert len(recs) == 2 and report.ok_indices == [0, 2]
    (bad,) = report.bad
    assert (bad.index, bad.line) == (1, 3) and "invalid JSON on line 3" in bad.reason


def test_broken_json_list_names_line(folder):
    p = folder / "d.json"
    p.write_text('[\n {"audio_id": "a.wav",\n  "instruction": }\n]')
    with pytest.raises(RecordError, match="line 3"):
        load_records(p)


def test_every_bad_case_reported_by_index(folder):
    base = {k: v for k, v in _rec().items() if k != "input"}  # absent input is fine
    recs = [
        base,                                                       # 0 ok
        {k: v for k, v in _rec().items() if k != "instruction"},    # 1 missing field
        _rec(output=3),                                             # 2 wrong type
        _rec(input=None),                                           # 3 wrong type (optional field)
        _rec(task=["qa"]),                                          # 4 wrong type (optional field)
        _rec("missing.wav"),                                        # 5 missing audio file
        _rec("corrupt.wav"),                                        # 6 corrupt audio
        _rec(audio_id=None),                                        # 7 ok, text-only
        _rec("empty"),                                              # 8 ok, text-only (reference convention)
        _rec(""),                                                   # 9 ok, text-only
        "not a record",                                             # 10 not an object
        _rec(instruction="  "),                                     # 11 empty instruction
        _rec(audio_id=5),                                           # 12 wrong audio_id type
        _rec(str(folder / "a.wav")),                                # 13 ok, absolute path
        _rec("sub/../a.wav"),                                       # 14 ok, relative with ..
        _rec("."),                                                  # 15 a folder, not a file
    ]
    p = _write_json(folder / "d.json", recs)
    report = validate_records(load_records(p), p)
    assert report.ok_indices == [0, 7, 8, 9, 13, 14] and report.n_text_only == 3
    reasons = {b.index: b.reason for b in report.bad}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 10, 11, 12, 15}
    assert "missing required field 'instruction'" in reasons[1]
    assert "'output' must be a string, got int" in reasons[2]
    assert "'input' must be a string, got NoneType" in reasons[3]
    assert "'task' must be a string, got list" in reasons[4]
    assert "audio file not found" in reasons[5] and str(folder / "missing.wav") in reasons[5]
    assert "unreadable audio file" in reasons[6]
    assert "not a JSON object" in reasons[10]
    assert "'instruction' is empty" in reasons[11]
    assert "'audio_id' must be a string" in reasons[12]
    assert "not a file" in reasons[15]
    assert [b.audio_id for b in report.bad if b.index in (5, 6)] == ["missing.wav", "corrupt.wav"]
    text = report.to_text()
    assert "16 records, 6 ok (3 text-only), 10 bad" in text and "record 5 audio_id='missing.wav'" in text
    # without audio checks only the schema problems remain
    assert {b.index for b in validate_records(recs, p, check_audio=False).bad} == {1, 2, 3, 4, 10, 11, 12}


def test_deep_check_decodes(folder):
    recs = [_rec("a.wav"), _rec("nan.wav")]
    p = _write_json(folder / "d.json", recs)
    assert validate_records(recs, p).ok  # header is fine
    deep = validate_records(recs, p, deep=True)
    assert [b.index for b in deep.bad] == [1] and "non-finite" in deep.bad[0].reason


def test_require_output_false_for_inference(folder):
    recs = [{"audio_id": "a.wav", "instruction": "Describe."}, _rec(output="")]
    p = _write_json(folder / "d.json", recs)
    assert {b.index for b in validate_records(recs, p).bad} == {0, 1}
    assert validate_records(recs, p, require_output=False).ok


def test_resolve_audio_path(tmp_path):
    data = tmp_path / "x" / "d.json"
    assert resolve_audio_path("audio/a.wav", data) == (tmp_path / "x" / "audio" / "a.wav").resolve()
    assert resolve_audio_path("/abs/a.wav", data) == Path("/abs/a.wav")
    assert resolve_audio_path("a.wav", tmp_path) == (tmp_path / "a.wav").resolve()  # folder as base
    assert all(resolve_audio_path(t, data) is None for t in (None, "", "empty"))


def test_select_records_raises_with_first_20(folder):
    recs = [_rec()] + [_rec(f"missing_{i}.wav") for i in range(25)]
    p = _write_json(folder / "d.json", recs)
    with pytest.raises(RecordError) as ei:
        select_records(p, report_dir=folder / "rep")
    msg = str(ei.value)
    assert msg.startswith("25 bad records") and "missing_19.wav" in msg and "missing_20.wav" not in msg
    assert "... and 5 more bad records" in msg
    assert len(ei.value.report.bad) == 25
    assert (folder / "rep" / "data_validation_report.json").exists()


def test_select_records_skip_bad(folder):
    recs = [{k: v for k, v in _rec().items() if k != "input"}, _rec("missing.wav"), _rec(None)]
    p = _write_json(folder / "d.json", recs)
    good, report = select_records(p, skip_bad=True, report_dir=folder / "out")
    assert [r["audio_id"] for r in good] == ["a.wav", None] and good[0]["input"] == ""
    assert "input" not in recs[0]  # caller's data untouched
    saved = json.loads((folder / "out" / "data_validation_report.json").read_text())
    assert saved["ok_indices"] == [0, 2] and saved["bad"][0]["index"] == 1
    assert saved["bad"][0]["audio_id"] == "missing.wav"
    assert "record 1" in (folder / "out" / "data_validation_report.txt").read_text()


def test_select_records_nothing_usable(folder):
    p = _write_json(folder / "d.json", [_rec("missing.wav")])
    with pytest.raises(RecordError, match="no usable records"):
        select_records(p, skip_bad=True)


def test_bundled_examples_validate():
    for name in ("train_data_example.json", "inference_data_example.json"):
        recs, report = select_records(REPO / "data" / "example" / name, deep=True)
        assert report.ok and recs and all(r["audio_id"] == "demo_clip.wav" for r in recs)


def test_text_that_cannot_be_a_path_or_utf8_is_a_bad_record(folder):
    recs = [_rec(), _rec("audio/\udcff.wav"), _rec("a\x00b.wav"), _rec(output="bad \ud800 text")]
    p = folder / "d.json"
    p.write_text(json.dumps(recs))  # json escapes the lone surrogates as \udcff, \ud800
    with pytest.raises(RecordError) as ei:
        select_records(p, report_dir=folder / "rep")
    reasons = {b.index: b.reason for b in ei.value.report.bad}
    assert set(reasons) == {1, 2, 3}
    assert "'audio_id' is not valid Unicode" in reasons[1] and "NUL byte" in reasons[2]
    assert "'output' is not valid Unicode" in reasons[3]
    text = (folder / "rep" / "data_validation_report.txt").read_text()
    assert "record 1" in text and "record 2" in text and "record 3" in text  # written despite the surrogates


def test_non_utf8_bytes_are_named(folder):
    good = json.dumps(_rec()).encode()
    p = folder / "d.jsonl"
    p.write_bytes(good + b"\n" + good.replace(b"a.wav", b"\xff\xfe.wav") + b"\n" + good + b"\n")
    recs, report = select_records(p, skip_bad=True)
    assert len(recs) == 2 and [(b.index, b.line) for b in report.bad] == [(1, 2)]
    assert "line 2 is not UTF-8" in report.bad[0].reason
    q = folder / "d.json"
    q.write_bytes(b"[" + good.replace(b"a.wav", b"\xff.wav") + b"]")
    with pytest.raises(RecordError, match=r"d.json: the file is not UTF-8 text \(bad byte at offset"):
        load_records(q)
