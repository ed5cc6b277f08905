"""fusionaudio.train on bad numbers and bad records: a non-finite loss or gradient stops the
run (naming the step and the records, exit 1, nothing non-finite saved); any failure while
preparing a clip is that clip's error (skipped and reported with --skip_bad_records);
the batch-time audio checks run up front; errors are one line. Trackers (tensorboard)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.audio import AudioError
from fusionaudio.train import NonFiniteError, main, train

FAST = dict(val_set_size=0, warmup_steps=0, save_steps=0, eval_steps=0, progress=False, logging_steps=0, seed=0,
            batch_size=4, micro_batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two good clips, a NaN clip, a too-short clip; records (absolute paths) per case."""
    d = tmp_path_factory.mktemp("err_data")
    t = np.arange(16000) / 16000
    for i, f in enumerate((440.0, 1200.0)):
        sf.write(str(d / f"good{i}.wav"), (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    sf.write(str(d / "nan.wav"), np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(str(d / "short.wav"), np.zeros(100, dtype=np.float32), 16000)  # < one 25 ms frame
    loud = (1e19 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)  # finite samples, inf fbank (issue 9.1)
    sf.write(str(d / "huge.wav"), loud, 16000, subtype="FLOAT")
    return d


def _data(folder: Path, tmp: Path, names: list[str], name="d.json") -> Path:
    recs = [{"audio_id": str(folder / n), "instruction": "Describe the audio.", "input": "", "output": f"Sound {i}."}
            for i, n in enumerate(names)]
    (tmp / name).write_text(json.dumps(recs))
    return tmp / name


def test_non_finite_loss_stops_naming_step_and_records(tiny_base_dir, clips, tmp_path):
    data = _data(clips, tmp_path, ["good0.wav", "good1.wav"] * 2)
    out = tmp_path / "run"
    args = dict(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(out), max_steps=4,
                learning_rate=1e30, trainable_params="full", **FAST)
    with pytest.raises(NonFiniteError, match=r"step \d+: the loss is (nan|inf).*record \d \(.*good\d\.wav\)"):
        train(**args)
    assert not (out / "adapter_model.safetensors").exists()
    cli = [f"--{k}={v}" for k, v in args.items()]
    assert main(cli) == 1  # the command exits non-zero, with one line


def test_non_finite_gradient_stops_before_the_optimizer_step(tiny_base_dir, clips, tmp_path, monkeypatch):
    import fusionaudio.train.run as run

    real = run.set_trainable

    def poisoned(model, mode):
        names = real(model, mode)
        dict(model.named_parameters())[names[0]].register_hook(lambda g: g * float("nan"))
        return names

    monkeypatch.setattr(run, "set_trainable", poisoned)
    data = _data(clips, tmp_path, ["good0.wav", "good1.wav"] * 2)
    with pytest.raises(NonFiniteError, match=r"step 1: the gradient norm is nan \(batch: record \d"):
        train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(tmp_path / "run"), max_steps=1,
              save_steps=1, **{k: v for k, v in FAST.items() if k != "save_steps"})
    assert not list((tmp_path / "run").glob("*checkpoint*")) and not (tmp_path / "run" / "log.jsonl").read_text()


def test_nan_and_too_short_audio_stop_before_training(tiny_base_dir, clips, tmp_path, capsys, monkeypatch):
    import fusionaudio.train.run as run

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(run, "build_model", no_model)
    data = _data(clips, tmp_path, ["good0.wav", "nan.wav", "good1.wav", "short.wav", "huge.wav"])
    args = [f"--base_model={tiny_base_dir}", f"--data_path={data}", f"--output_dir={tmp_path / 'run'}",
            "--max_steps=1", *(f"--{k}={v}" for k, v in FAST.items())]
    assert main(args) == 2  # bad input: exit 2, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 3 audio file(s) failed")
    assert "record 1 (" in err[0] and "nan.wav" in err[0] and "record 3 (" in err[0] and "short.wav" in err[0]
    assert "record 4 (" in err[0] and "huge.wav" in err[0]
    assert not (tmp_path / "run" / "log.jsonl").exists()  # stopped before step 1


@pytest.mark.parametrize("check_audio", [True, False], ids=["up_front", "at_batch_time"])
def test_any_failure_preparing_a_clip_is_a_skipped_record(tiny_base_dir, clips, tmp_path, monkeypatch, check_audio):
    import fusionaudio.train.batches as batches

    real = batches.load_fbank_batch

    def exploding(paths, **kw):  # e.g. the resampler's allocation on a lying header
        if any(Path(p).name == "good1.wav" for p in paths):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory")
        return real(paths, **kw)

    monkeypatch.setattr(batches, "load_fbank_batch", exploding)
    data = _data(clips, tmp_path, ["good0.wav", "good1.wav", "good0.wav", "good0.wav"])
    args = dict(base_model=str(tiny_base_dir), data_path=str(data), max_steps=1, check_audio=check_audio, **FAST)
    with pytest.raises(AudioError, match=r"record 1 \(.*good1\.wav\).*RuntimeError: \[enforce fail"):
        train(output_dir=str(tmp_path / "stop"), **args)
    summary = train(output_dir=str(tmp_path / "skip"), skip_bad_records=True, **args)
    assert summary["global_step"] == 1
    skipped = (tmp_path / "skip" / "skipped_audio.txt").read_text()
    assert "good1.wav" in skipped and "not enough memory" in skipped and "good0.wav" not in skipped


def test_bad_records_are_one_line_errors_with_a_report(tiny_base_dir, clips, tmp_path, capsys):
    recs = [{"audio_id": str(clips / "good0.wav"), "instruction": "Describe.", "input": "", "output": "A."},
            {"audio_id": "audio/\udcff.wav", "instruction": "Describe.", "input": "", "output": "A."},
            {"audio_id": "a\u0000b.wav", "instruction": "Describe.", "input": "", "output": "A."}]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))  # ensure_ascii: the lone surrogate is written as \udcff
    out = tmp_path / "run"
    assert main([f"--base_model={tiny_base_dir}", f"--data_path={data}", f"--output_dir={out}", "--device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 bad records") and "Traceback" not in err
    report = (out / "data_validation_report.txt").read_text()
    assert "record 1" in report and "not valid Unicode" in report and "record 2" in report and "NUL byte" in report


def test_report_to_tensorboard_writes_the_losses(tiny_base_dir, clips, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = _data(clips, tmp_path, ["good0.wav", "good1.wav"] * 2)
    out = tmp_path / "run"
    train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(out), max_steps=2,
          report_to="tensorboard", wandb_project="tb_test", **FAST)
    (events,) = {p.parent for p in (out / "runs").rglob("events.out.tfevents.*") if "loss" in
                 EventAccumulator(str(p)).Reload().Tags()["scalars"]}
    scalars = EventAccumulator(str(events)).Reload()
    logged = [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e.step for e in scalars.Scalars("loss")] == [1, 2]
    assert [e.value for e in scalars.Scalars("loss")] == pytest.approx(logged, rel=1e-6)
    with pytest.raises(ValueError, match="report_to"):
        train(base_model=str(tiny_base_dir), data_path=str(data), output_dir=str(out), report_to="mlflowx", **FAST)
