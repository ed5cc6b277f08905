"""The work directory: one lock per output, the input is never overwritten, shard entries validated,
stale temporary files removed, I/O errors naming the path."""

from __future__ import annotations

import errno
import json
import os

import pytest

from fusionaudio import infer
from fusionaudio.infer import journal

TEXT = ["--do_sample", "False", "--max_new_tokens", "3", "--device", "cpu", "--no_progress", "--loader_workers", "0"]


@pytest.fixture()
def text_input(tmp_path):
    records = [{"audio_id": "empty", "instruction": f"Question {k}?", "output": str(k)} for k in range(4)]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, records


def _argv(path, out, base, *extra):
    return ["--json_input", str(path), "--json_output", str(out), "--base_model", str(base), *TEXT, *extra]


def test_plain_run_and_shard_run_on_one_output_refuse_each_other(text_input, tiny_base_dir, tmp_path, caplog, capsys):
    path, _ = text_input
    out = tmp_path / "preds.json"
    work = infer.default_work_dir(out)
    work.mkdir()
    held = journal.RunLock(work, exclusive=True, what="a plain run")  # a plain run is going
    try:
        assert infer.main(_argv(path, out, tiny_base_dir, "--shard", "1/2")) == 2
        err = caplog.text + capsys.readouterr().err
        assert "in use by another run" in err
        assert not list(work.glob("shard-*.jsonl"))  # nothing computed
    finally:
        held.close()
    part = journal.RunLock(work, exclusive=False, what="--shard 0/2")  # a shard run is going
    try:
        assert infer.main(_argv(path, out, tiny_base_dir)) == 2
        second = journal.RunLock(work, exclusive=False, what="--shard 1/2")  # shards of one run go together
        second.close()
    finally:
        part.close()
    assert infer.main(_argv(path, out, tiny_base_dir)) == 0  # free again


def test_two_runs_on_one_output_refuse_each_other_whatever_their_work_dir(text_input, tiny_base_dir, tmp_path,
                                                                            caplog, capsys):
    path, _ = text_input
    out = tmp_path / "preds.json"
    held = journal.RunLock(tmp_path / "work_a", exclusive=True, what="run A", output=out)  # run A is writing out
    try:
        for argv in (_argv(path, out, tiny_base_dir, "--work_dir", str(tmp_path / "work_b")),
                     ["merge", "--json_input", str(path), "--json_output", str(out), "--work_dir",
                      str(tmp_path / "work_a")]):
            caplog.clear()
            assert infer.main(argv) == 2
            err = caplog.text + capsys.readouterr().err
            assert f"{out} is being written by another run" in err and "another --work_dir" not in err
        assert not (tmp_path / "work_b").exists() or not list((tmp_path / "work_b").glob("shard-*.jsonl"))
        assert not out.exists()
    finally:
        held.close()
    work = tmp_path / "work_c"
    held = journal.RunLock(work, exclusive=True, what="run C", output=tmp_path / "other.json")
    try:  # the same work dir for another output: refused by the work dir's lock, with advice that works
        assert infer.main(_argv(path, out, tiny_base_dir, "--work_dir", str(work))) == 2
        err = caplog.text + capsys.readouterr().err
        assert "is in use by another run" in err and "needs its own --work_dir" in err
    finally:
        held.close()
    assert infer.main(_argv(path, out, tiny_base_dir, "--work_dir", str(tmp_path / "work_b"))) == 0
    assert len(json.loads(out.read_text())) == 4


def test_output_equal_to_input_is_refused(text_input, tiny_base_dir, caplog, capsys):
    path, _ = text_input
    before = path.read_bytes()
    assert infer.main(_argv(path, path, tiny_base_dir)) == 2
    err = caplog.text + capsys.readouterr().err
    assert "refusing to overwrite the input" in err
    assert infer.main(["merge", "--json_input", str(path), "--json_output", str(path)]) == 2
    assert path.read_bytes() == before


def test_invalid_shard_entries_are_redone(text_input, tiny_base_dir, tmp_path, caplog):
    path, records = text_input
    out = tmp_path / "preds.json"
    assert infer.main(_argv(path, out, tiny_base_dir)) == 0
    good = json.loads(out.read_text())
    shard = infer.default_work_dir(out) / "shard-0.jsonl"
    lines = shard.read_text().splitlines()
    rid = infer.record_id(2, records[2])
    lines = [ln for ln in lines if json.loads(ln)["record_id"] != rid]
    lines.append(json.dumps({"record_id": rid, "index": 2, "run_id": "x", "rank": 0, "record": {}}))
    lines.append(json.dumps({"record_id": rid, "index": 2, "run_id": "x", "rank": 0,
                             "record": {"record_id": "other", "prediction": "p", "error": None}}))
    shard.write_text("\n".join(lines) + "\n")
    assert len(infer.read_shard(shard)) == 3
    assert "line 4 is not a valid shard entry" in caplog.text and "line 5" in caplog.text
    assert infer.main(_argv(path, out, tiny_base_dir)) == 0  # record 2 is redone
    assert json.loads(out.read_text()) == good


def test_stale_temp_files_are_removed_live_ones_kept(text_input, tiny_base_dir, tmp_path):
    path, _ = text_input
    out = tmp_path / "preds.json"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [tmp_path / f".preds.json.{dead}.tmp", tmp_path / f".preds.json.errors.json.{dead}.tmp"]
    live = tmp_path / f".preds.json.{os.getppid()}.tmp"
    other = tmp_path / f".someone-else.json.{dead}.tmp"
    for p in [*stale, live, other]:
        p.write_text("x" * 100)
    assert infer.main(_argv(path, out, tiny_base_dir)) == 0
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()  # a live writer's, and not this output's


def test_io_errors_name_the_path(tmp_path, monkeypatch, text_input, tiny_base_dir, caplog, capsys):
    target = tmp_path / "deep" / "preds.json"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "fsync", full)
    with pytest.raises(infer.InferError, match=r"preds\.json: cannot write \(No space left on device, errno 28\)"):
        journal.write_atomic(target, "data")
    assert not list(target.parent.glob(".*.tmp"))  # the temporary file does not stay behind
    path, _ = text_input
    assert infer.main(_argv(path, tmp_path / "o.json", tiny_base_dir)) == 2
    err = caplog.text + capsys.readouterr().err
    assert "No space left on device" in err and "o.json.parts" in err
