"""The one record reader (fusionaudio.records)."""

from __future__ import annotations

import json

import pytest

from fusionaudio.records import RecordError, is_text_only, load_records, read_records


def test_json_list_and_jsonl_read_the_same(tmp_path):
    recs = [{"audio_id": "a.wav", "instruction": "x"}, {"audio_id": "empty", "instruction": "y"}]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    assert load_records(tmp_path / "a.json") == load_records(tmp_path / "a.jsonl") == recs


def test_bad_jsonl_lines_keep_their_place_and_name_their_line(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"a": 1}\n{oops\n{"a": 3}\n')
    records, bad = read_records(tmp_path / "b.jsonl")
    assert records == [{"a": 1}, None, {"a": 3}] and bad[1].line == 2 and "invalid JSON on line 2" in bad[1].reason
    with pytest.raises(RecordError, match="b.jsonl: invalid JSON on line 2"):
        load_records(tmp_path / "b.jsonl")


@pytest.mark.parametrize("text, message", [("[1, ", "invalid JSON at line 1"), ('{"a": 1', "invalid JSON on line 1"),
                                           ("[1, [2", "invalid JSON")])
def test_whole_file_problems_name_the_file(tmp_path, text, message):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(RecordError, match=message):
        load_records(tmp_path / "c.json")
    with pytest.raises(RecordError, match="cannot read the data file"):
        load_records(tmp_path / "missing.json")


def test_text_only_markers():
    assert all(is_text_only(x) for x in (None, "", "empty", " empty ")) and not is_text_only("a.wav")
