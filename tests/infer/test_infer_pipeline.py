"""The batch inference pipeline: loader workers, bad files mid-batch, order, per-record isolation,
non-finite features, prompt length, batching by prompt length, early stop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio import infer
from fusionaudio.infer import loader

GREEDY = ["--do_sample", "False", "--max_new_tokens", "6", "--device", "cpu", "--no_progress"]


@pytest.fixture(scope="module")
def engine(tiny_base_dir):
    from fusionaudio.gama.inference import FusionAudioInference

    return FusionAudioInference(tiny_base_dir, device="cpu")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, audio_files):
    """12 records: good clips of three rates with bad ones mid-batch (missing, corrupt, huge amplitude)."""
    d = tmp_path_factory.mktemp("mixed")
    for f in audio_files:
        (d / f.name).write_bytes(f.read_bytes())
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    t = np.arange(16000) / 16000
    sf.write(str(d / "huge.wav"), (1e20 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, subtype="FLOAT")
    names = ["a.wav", "missing.wav", "b.wav", "c.flac", "corrupt.wav", "a.wav", "huge.wav", "b.wav", "empty",
             "c.flac", "a.wav", "b.wav"]
    records = [{"audio_id": n, "instruction": f"Question {k}: what is there?", "output": str(k)}
               for k, n in enumerate(names)]
    path = d / "in.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, records


def _run(path, out, base, *extra):
    return infer.main(["--json_input", str(path), "--json_output", str(out), "--base_model", str(base),
                       *GREEDY, *extra])


def _expected(engine, path, records, indices):
    from fusionaudio.gama.inference import Request

    requests = []
    for i in indices:
        audio = infer.make_items(records, path)[i].audio_path
        fbank = engine.load_audio(audio)[0] if audio is not None else None
        requests.append(Request(records[i]["instruction"], fbank))
    return engine.generate(requests, batch_size=1, do_sample=False, max_new_tokens=6)


def test_loader_workers_bad_files_mid_batch_keep_order(mixed, tiny_base_dir, engine, tmp_path):
    path, records = mixed
    out = tmp_path / "preds.json"
    assert _run(path, out, tiny_base_dir, "--batch_size", "3", "--loader_workers", "2") == 0
    preds = json.loads(out.read_text())
    assert [p["output"] for p in preds] == [r["output"] for r in records]  # input order
    bad = {1: "file not found", 4: "decode", 6: "finite"}
    assert [i for i, p in enumerate(preds) if p["error"]] == sorted(bad)
    for i, words in bad.items():
        assert words in preds[i]["error"] and records[i]["audio_id"] in preds[i]["error"]
        assert preds[i]["prediction"] is None
    good = [i for i in range(len(records)) if i not in bad]
    assert [preds[i]["prediction"] for i in good] == _expected(engine, path, records, good)
    # the same with the audio prepared in this process: identical output
    out0 = tmp_path / "preds0.json"
    assert _run(path, out0, tiny_base_dir, "--batch_size", "3", "--loader_workers", "0") == 0
    assert json.loads(out0.read_text()) == preds


def test_any_failure_preparing_one_record_is_its_error(mixed, tiny_base_dir, tmp_path, monkeypatch):
    """A RuntimeError (e.g. a failed allocation in the resampler) on one clip does not stop the run."""
    import fusionaudio.audio.fbank as audio  # where the front end looks resample up

    real = audio.resample

    def flaky(wave, orig_sr, new_sr=16000, method="sinc"):
        if orig_sr == 22050:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 137 TB")
        return real(wave, orig_sr, new_sr, method=method)

    monkeypatch.setattr(audio, "resample", flaky)
    path, records = mixed
    out = tmp_path / "preds.json"
    assert _run(path, out, tiny_base_dir, "--batch_size", "4", "--loader_workers", "1") == 0
    preds = json.loads(out.read_text())
    for i, rec in enumerate(records):
        if rec["audio_id"] == "b.wav":
            assert "RuntimeError" in preds[i]["error"] and "b.wav" in preds[i]["error"]
            assert "137 TB" in preds[i]["error"]
    assert sum(p["prediction"] is not None for p in preds) == 6  # a.wav x3, c.flac x2, text only


def test_prompt_longer_than_positions_is_that_records_error(tiny_base_dir, tmp_path, audio_files):
    records = [{"audio_id": "empty", "instruction": "fine"},
               {"audio_id": str(audio_files[0]), "instruction": "fi " * 20000},
               {"audio_id": str(audio_files[0]), "instruction": "also fine"}]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "o.json"
    assert _run(path, out, tiny_base_dir, "--batch_size", "2") == 0
    preds = json.loads(out.read_text())
    assert preds[1]["prediction"] is None and "prompt too long" in preds[1]["error"]
    assert "2048 positions" in preds[1]["error"] and "record 1" in preds[1]["error"]
    assert preds[0]["error"] is None and preds[2]["error"] is None


def test_api_refuses_a_prompt_longer_than_positions(engine):
    from fusionaudio.gama.inference import Request

    with pytest.raises(ValueError, match="prompt too long"):
        engine.generate([Request("fi " * 20000, None)], do_sample=False, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens 2040"):
        engine.generate([Request("short question", torch.zeros(1024, 128))], do_sample=False, max_new_tokens=2040)


def test_batches_group_prompt_lengths_and_keep_audio_apart():
    items = [infer.Item(i, str(i), {"instruction": "x" * n}, Path("a.wav") if i % 2 else None)
             for i, n in enumerate([50, 3, 48, 2, 5, 51, 4, 49])]
    batches = infer.make_batches(items, 2, key=lambda it: len(it.record["instruction"]))
    assert sorted(it.index for b in batches for it in b) == list(range(8))
    for b in batches:
        assert len({it.audio_path is None for it in b}) == 1
        lengths = [len(it.record["instruction"]) for it in b]
        assert max(lengths) - min(lengths) <= 3  # similar lengths share a batch
    assert [b[0].index for b in batches] == sorted(b[0].index for b in batches)


def test_finished_batch_stops_early(engine):
    """All rows reach eos at step 1: generation ends there instead of running max_new_tokens steps."""
    from fusionaudio.gama.inference import Request

    calls = []
    hook = engine.model.llm.model.register_forward_hook(lambda *a: calls.append(1))
    lm_head = engine.model.llm.lm_head.weight
    saved = lm_head[2].clone()
    try:
        with torch.no_grad():
            lm_head[2] = engine.model.llm.model.norm.weight.sign() * 50.0
        out = engine.generate([Request(q, torch.zeros(1024, 128)) for q in ("a", "bb bb", "ccc ccc ccc")],
                              do_sample=False, max_new_tokens=50)
    finally:
        hook.remove()
        with torch.no_grad():
            lm_head[2] = saved
    assert out == ["", "", ""] and len(calls) == 1


def test_fbanks_on_device_equal_per_clip_path(audio_files):
    from fusionaudio.audio import load_fbank

    prepared = [loader.prepare_gama(p) for p in audio_files]
    rows = loader.fbanks_for(prepared, audio_files, "cpu")
    for row, path in zip(rows, audio_files):
        assert torch.equal(row, load_fbank(path))


def test_resampler_option_reaches_the_front_end(audio_files):
    sinc = loader.prepare_gama(audio_files[1], "sinc").audio  # 22,050 Hz clip
    soxr = loader.prepare_gama(audio_files[1], "soxr").audio
    assert sinc.shape == soxr.shape and not torch.equal(sinc, soxr)
    args = infer.build_parser().parse_args(["--json_input", "i", "--json_output", "o"])
    assert args.resampler == "sinc"
