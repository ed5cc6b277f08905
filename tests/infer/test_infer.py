"""Batch inference (``python -m fusionaudio.infer``): output contract, shard files, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fusionaudio import infer
from fusionaudio.commands import parse_bool

REPO = Path(__file__).resolve().parents[2]
GREEDY = ["--do_sample", "False", "--max_new_tokens", "16", "--device", "cpu"]


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, audio_files):
    """An input file with relative and absolute audio paths, text-only, missing, corrupt and empty audio."""
    d = tmp_path_factory.mktemp("infer_data")
    (d / "clips").mkdir()
    for f in audio_files:
        (d / "clips" / f.name).write_bytes(f.read_bytes())
    (d / "clips" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    sf.write(str(d / "clips" / "empty.wav"), np.zeros((0, 1), dtype=np.float32), 16000)
    records = [
        {"audio_id": "clips/a.wav", "instruction": "Describe the audio.", "input": "", "output": "a tone",
         "dataset": "synth", "task": "caption"},
        {"audio_id": "empty", "instruction": "What is two plus two?", "output": "four", "task": "text"},
        {"audio_id": "clips/missing.wav", "instruction": "Describe the audio.", "output": "?"},
        {"audio_id": str(d / "clips" / "b.wav"), "instruction": "What is the pitch?", "input": "Answer briefly.",
         "output": "high"},
        {"audio_id": "clips/corrupt.wav", "instruction": "Describe the audio.", "output": "?"},
        {"audio_id": "clips/c.flac", "instruction": "How many channels?", "output": "two", "extra": [1, 2]},
        {"audio_id": "clips/empty.wav", "instruction": "Describe the audio.", "output": "?"},
        {"audio_id": None, "instruction": "Name a bird.", "output": "robin"},
    ]
    return write_json(d / "test.json", records), records


@pytest.fixture(scope="module")
def single_run(dataset, tiny_base_dir, tmp_path_factory):
    """One greedy run in this process (batch size 2)."""
    path, _ = dataset
    out = tmp_path_factory.mktemp("infer_out") / "preds.json"
    code = infer.main(["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir),
                       "--batch_size", "2", "--no_progress", *GREEDY])
    return code, out


def test_end_to_end_order_errors_and_predictions(dataset, single_run, tiny_base_dir):
    from fusionaudio.gama.inference import FusionAudioInference, Request

    path, records = dataset
    code, out = single_run
    assert code == 0
    preds = json.loads(out.read_text(encoding="utf-8"))
    assert len(preds) == len(records)
    for i, (rec, pred) in enumerate(zip(records, preds)):
        assert {k: pred[k] for k in rec} == rec  # input fields (ground truth `output` included) untouched
        assert pred["record_id"] == infer.record_id(i, rec)
    assert len({p["record_id"] for p in preds}) == len(preds)

    bad = {2: "file not found", 4: "cannot decode", 6: "empty"}
    for i, words in bad.items():
        assert preds[i]["prediction"] is None and preds[i]["audio_info"] is None
        assert words in preds[i]["error"] and records[i]["audio_id"].split("/")[-1] in preds[i]["error"]
    report = json.loads(infer.errors_path(out).read_text(encoding="utf-8"))
    assert [e["index"] for e in report["errors"]] == sorted(bad) and report["n_records"] == len(records)

    engine = FusionAudioInference(tiny_base_dir, None, device="cpu", dtype="float32")
    good = [i for i in range(len(records)) if i not in bad]
    requests = []
    for i in good:
        assert preds[i]["error"] is None and isinstance(preds[i]["prediction"], str)
        audio = infer.make_items(records, path)[i].audio_path
        fbank, info = engine.load_audio(audio)
        if audio is None:
            assert preds[i]["audio_info"] is None
        else:
            assert preds[i]["audio_info"]["duration_s"] == pytest.approx(info.duration_s)
            assert preds[i]["audio_info"]["channels"] == info.channels
            assert preds[i]["audio_info"]["sample_rate"] == info.sample_rate
            assert preds[i]["audio_info"]["truncated"] is False
        requests.append(Request(records[i]["instruction"], fbank, records[i].get("input")))
    expected = engine.generate(requests, batch_size=1, do_sample=False, max_new_tokens=16)
    assert [preds[i]["prediction"] for i in good] == expected
    assert len(set(expected)) > 1  # the requests really differ


def test_rerun_skips_finished_records_and_refuses_other_settings(dataset, single_run, tiny_base_dir, caplog, capsys):
    path, records = dataset
    _, out = single_run
    shard = infer.default_work_dir(out) / "shard-0.jsonl"
    before = shard.read_bytes()
    base = ["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir), "--no_progress"]
    assert infer.main([*base, *GREEDY]) == 0
    assert shard.read_bytes() == before  # nothing recomputed
    assert infer.main([*base, *GREEDY, "--retry_errors"]) == 0  # only the 3 error records are redone
    retried = [json.loads(x) for x in shard.read_bytes()[len(before):].splitlines()]
    assert sorted(e["index"] for e in retried) == [2, 4, 6] and all(e["record"]["error"] for e in retried)
    assert len(json.loads(out.read_text(encoding="utf-8"))) == len(records)
    assert infer.main([*base, *GREEDY[:-2], "--max_new_tokens", "9", "--device", "cpu"]) == 2
    err = caplog.text + capsys.readouterr().err
    assert "other settings" in err and "max_new_tokens" in err


def test_merge_reports_missing_records_and_writes_nothing(dataset, single_run, tmp_path, caplog):
    path, records = dataset
    _, out = single_run
    work = tmp_path / "parts"
    work.mkdir()
    lines = (infer.default_work_dir(out) / "shard-0.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for ln in lines if json.loads(ln)["index"] not in (3, 5)]
    (work / "shard-1.jsonl").write_text("".join(kept), encoding="utf-8")
    target = tmp_path / "merged.jsonl"
    assert infer.main(["merge", "--json_input", str(path), "--json_output", str(target), "--work_dir", str(work)]) == 1
    assert not target.exists()
    assert "2 of 8 records" in caplog.text and "3 (" in caplog.text and "5 (" in caplog.text

    (work / "shard-0.jsonl").write_text("".join(ln for ln in lines if ln not in kept), encoding="utf-8")
    assert infer.main(["merge", "--json_input", str(path), "--json_output", str(target), "--work_dir", str(work)]) == 0
    merged = [json.loads(x) for x in target.read_text(encoding="utf-8").splitlines()]  # .jsonl output
    assert merged == json.loads(out.read_text(encoding="utf-8"))


def test_shard_reader_and_writer_handle_torn_lines(tmp_path, caplog):
    entry = {"record_id": "0-x", "index": 0, "run_id": "r", "rank": 0, "record": {"prediction": "p", "error": None}}
    shard = tmp_path / "shard-0.jsonl"
    good = json.dumps(entry) + "\n"
    shard.write_text(good + "{not json}\n" + good.replace("0-x", "1-y") + '{"record_id": "2-z", "rec')
    assert [e["record_id"] for e in infer.read_shard(shard)] == ["0-x", "1-y"]
    assert "line 2 is not valid JSON" in caplog.text
    writer = infer.ShardWriter(tmp_path, 0)  # cuts the torn final line before appending
    writer.write([{**entry, "record_id": "2-z"}])
    writer.close()
    assert shard.read_text().endswith("}\n") and '"rec{' not in shard.read_text()
    assert sorted(infer.read_all_shards(tmp_path)) == ["0-x", "1-y", "2-z"]


def test_shard_writer_is_exclusive(tmp_path):
    first = infer.ShardWriter(tmp_path, 3)
    try:
        with pytest.raises(infer.InferError, match="locked"):
            infer.ShardWriter(tmp_path, 3)
    finally:
        first.close()


def test_bad_input_records_are_named(tmp_path, caplog, capsys):
    path = write_json(tmp_path / "in.json", [{"audio_id": "empty", "instruction": "ok"},
                                             {"instruction": "no audio id"}, {"audio_id": 3, "instruction": 4}])
    assert infer.main(["--json_input", str(path), "--json_output", str(tmp_path / "o.json"), "--no_progress"]) == 2
    err = caplog.text + capsys.readouterr().err
    assert "3 bad records" in err and "record 1: no 'audio_id'" in err
    assert "record 2: 'instruction' must be a string" in err


def test_record_ids_and_bool_options():
    rec = {"audio_id": "a.wav", "instruction": "x", "output": "y"}
    assert infer.record_id(4, rec) == infer.record_id(4, dict(reversed(list(rec.items()))))
    assert infer.record_id(4, rec) != infer.record_id(5, rec) != infer.record_id(4, {**rec, "output": "z"})
    assert parse_bool("False") is False and parse_bool("TRUE") is True
    args = infer.build_parser().parse_args(["--json_input", "i", "--json_output", "o", "--do_sample", "false"])
    assert args.do_sample is False and infer.generation_options(args.arch, args) == {
        "do_sample": False, "max_new_tokens": 1024, "num_beams": 1}  # greedy: no sampling options recorded
    args = infer.build_parser().parse_args(["--json_input", "i", "--json_output", "o"])
    assert infer.generation_options(args.arch, args) == {"temperature": 0.1, "top_p": 0.95, "top_k": 300,
                                              "max_new_tokens": 1024, "do_sample": True, "num_beams": 1}


def test_infer_sh_builds_the_commands():
    env = {**os.environ, "JSON_INPUT": "in.json", "JSON_OUTPUT": "out.json", "DRY_RUN": "1", "DO_SAMPLE": "false",
           "BASE_MODEL": "my base", "NPROC": "1"}
    one = subprocess.run(["bash", str(REPO / "scripts/eval/infer.sh"), "--seed", "3"], env=env, text=True,
                         capture_output=True, check=True).stdout
    assert "-m fusionaudio.infer" in one and "torch.distributed.run" not in one
    assert "--do_sample false" in one and r"--base_model my\ base" in one and one.strip().endswith("--seed 3")
    many = subprocess.run(["bash", str(REPO / "scripts/eval/infer.sh")], env={**env, "NPROC": "4"}, text=True,
                          capture_output=True, check=True).stdout
    assert "torch.distributed.run" in many and "--nproc_per_node 4" in many
    missing = subprocess.run(["bash", str(REPO / "scripts/eval/infer.sh")], env={**env, "JSON_INPUT": ""},
                             text=True, capture_output=True)
    assert missing.returncode == 2 and "JSON_INPUT" in missing.stderr


# --------------------------------------------------------------------------- crash test


def _complete_entries(work: Path) -> list[dict]:
    entries = []
    for shard in sorted(work.glob("shard-*.jsonl")):
        lines, _ = infer.complete_lines(shard.read_bytes())
        entries += [json.loads(x) for x in lines if x.strip()]
    return entries


def _wait_for_group_exit(pgid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {pgid} still alive after SIGKILL")


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(tmp_path, tiny_base_dir, audio_files):
    clip = tmp_path / "a.wav"
    clip.write_bytes(audio_files[0].read_bytes())
    records = []
    for k in range(60):  # mostly text-only (fast), every 4th with audio, one missing file
        audio = "a.wav" if k % 4 == 0 else ("nope.wav" if k == 7 else "empty")
        records.append({"audio_id": audio, "instruction": f"Question {k % 5}: what do you hear?", "output": str(k)})
    path = write_json(tmp_path / "in.json", records)
    out = tmp_path / "out" / "preds.json"
    work = infer.default_work_dir(out)
    cmd = [sys.executable, "-m", "fusionaudio.infer", "--json_input", str(path), "--json_output", str(out),
           "--base_model", str(tiny_base_dir), "--batch_size", "1", "--num_workers", "2", "--no_progress", *GREEDY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not work.is_dir() or len(_complete_entries(work)) < 4:
            assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no records finished within 90 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_for_group_exit(proc.pid)
        proc.stderr.close()
    before = _complete_entries(work)
    assert 4 <= len(before) < len(records), "the kill did not land mid-run"
    print(f"SIGKILL after {len(before)} of {len(records)} records; torn tail bytes per shard: "
          f"{[infer.complete_lines(p.read_bytes())[1] for p in sorted(work.glob('shard-*.jsonl'))]}")
    assert not out.exists()
    # a torn write, as a kill during write() leaves it (also covers a kill that landed mid-line)
    with open(work / "shard-0.jsonl", "ab") as f:
        f.write(b'{"record_id": "9-torn", "index": 9, "run_id": "x", "rec')

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _complete_entries(work)
    for shard in work.glob("shard-*.jsonl"):  # the torn line was cut; every line is complete
        assert shard.read_bytes().endswith(b"\n") and b"9-torn" not in shard.read_bytes()
    ids = [e["record_id"] for e in after]
    expected_ids = [infer.record_id(i, r) for i, r in enumerate(records)]
    assert sorted(ids) == sorted(expected_ids)  # zero lost, zero duplicated
    by_id = {e["record_id"]: e for e in after}
    assert all(by_id[e["record_id"]] == e for e in before)  # finished before the kill: kept, not redone
    first_run = {e["run_id"] for e in before}
    assert len(first_run) == 1
    redone = [e for e in after if e["run_id"] not in first_run]
    assert len(redone) == len(records) - len(before) and len({e["run_id"] for e in redone}) == 1

    preds = json.loads(out.read_text(encoding="utf-8"))
    assert [p["record_id"] for p in preds] == expected_ids
    assert [p["output"] for p in preds] == [r["output"] for r in records]
    assert [i for i, p in enumerate(preds) if p["error"]] == [7]
    # greedy: equal requests give equal answers, whichever attempt answered them
    answers: dict[tuple, set] = {}
    for r, p in zip(records, preds):
        if p["prediction"] is not None:
            answers.setdefault((r["audio_id"], r["instruction"]), set()).add(p["prediction"])
    assert all(len(v) == 1 for v in answers.values())


def test_audsemthinker_family_through_infer(dataset, tmp_path):
    """The second model family runs through the same batch command, with parsed sections."""
    from fusionaudio.audsem import AudSemThinkerInference
    from fusionaudio.audsem.tiny import build_tiny_checkpoint

    omni = build_tiny_checkpoint(tmp_path / "omni", full_omni=True)
    path, records = dataset
    out = tmp_path / "preds.json"
    code = infer.main(["--json_input", str(path), "--json_output", str(out), "--base_model", str(omni),
                       "--batch_size", "3", "--no_progress", "--structured", "--do_sample", "False",
                       "--max_new_tokens", "8", "--device", "cpu"])
    assert code == 0
    preds = json.loads(out.read_text())
    assert [r["instruction"] for r in preds] == [r["instruction"] for r in records]
    ok = [r for r in preds if r["error"] is None]
    assert ok and all(isinstance(r["prediction"], str) and "answer" in r["structured"] for r in ok)
    errors = {r["audio_id"] for r in preds if r["error"] is not None}
    assert errors == {"clips/missing.wav", "clips/corrupt.wav", "clips/empty.wav"}
    engine = AudSemThinkerInference(omni)
    first = preds[0]
    expected = engine.predict(str(path.parent / first["audio_id"]), first["instruction"], do_sample=False,
                              max_new_tokens=8)
    assert first["prediction"] == expected
