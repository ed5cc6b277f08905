"""WavCaps' evaluation protocol for the ASE model: loading, batch padding, long clips, the CLI."""

import json
import re
import sys

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.evaluate.records import EvalInputError
from fusionaudio.retrieval import load_ase, wavcaps_metrics
from fusionaudio.retrieval import wavcaps as wc
from fusionaudio.retrieval.tiny_ase import make_tiny_ase

CAPTIONS = [["a dog barks", "a dog is barking", "dogs bark loud", "the dog barks", "a loud dog"],
            ["rain falls on the roof", "rain", "water falls", "rain on a roof", "the rain falls"],
            ["a bird sings", "birds sing", "a bird is singing", "the bird sings", "a loud bird"]]


def tone(seconds, sr=32000, f=440.0, seed=0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.02 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavcaps")
    ckpt, bert = make_tiny_ase(root / "model")
    sf.write(root / "dog.wav", tone(1.5, f=300), 32000)
    sf.write(root / "rain.flac", np.stack([tone(0.5, 44100, 500), tone(0.5, 44100, 900, 1)], 1), 44100)
    sf.write(root / "bird.wav", tone(1.0, 16000, 2000), 16000)
    recs = [{"audio_id": a, "output": caps} for a, caps in zip(["dog.wav", "rain.flac", "bird.wav"], CAPTIONS)]
    (root / "test.json").write_text(json.dumps(recs))
    return root, ckpt, bert, load_ase(ckpt, bert)


def test_load_audio_averages_channels_then_kaiser_best(setup):
    import resampy

    root, _, _, model = setup
    wave = model.load_audio(root / "rain.flac")
    data, sr = sf.read(root / "rain.flac", dtype="float32")
    ref = resampy.resample(data.mean(axis=1), sr, 32000, filter="kaiser_best")
    assert wave.dtype == np.float32 and len(wave) == int(np.ceil(len(data) * 32000 / sr))
    np.testing.assert_allclose(wave, ref[: len(wave)], atol=1e-6)
    with pytest.raises(RuntimeError, match="missing.wav"):
        model.load_audio(root / "missing.wav")


def test_rows_are_padded_as_their_batch(setup):
    _, _, _, model = setup
    waves = [tone(1.5), tone(0.5, f=600), tone(1.0, f=900)]
    rows = wc.encode_clips(model, waves, batch_size=7)  # batches: rows 0-6 | 7-13 | 14
    assert rows.shape == (15, 16)

    def padded(i, n):
        return model.encode_audio(np.pad(waves[i], (0, n - len(waves[i])))[None]).numpy()[0]

    np.testing.assert_allclose(rows[0], padded(0, 48000), atol=1e-5)   # batch 0 holds clips 0 and 1
    np.testing.assert_allclose(rows[5], padded(1, 48000), atol=1e-5)   # clip 1 padded to clip 0's length
    np.testing.assert_allclose(rows[10], padded(2, 32000), atol=1e-5)  # batch 1: clips 1, 2 -> clip 2 unpadded
    np.testing.assert_allclose(rows[11:15], np.repeat(rows[10:11], 4, 0))
    big = wc.encode_clips(model, waves, batch_size=128)  # one batch: everything padded to 1.5 s
    np.testing.assert_allclose(big[10], padded(2, 48000), atol=1e-5)
    assert not np.allclose(big[10], rows[10], atol=1e-4)


def test_long_clip_policies(setup):
    _, _, _, model = setup
    limit = model.config.max_samples  # 81,919 samples = 2.56 s for the tiny geometry
    long = tone(3.4, f=700)
    with pytest.raises(EvalInputError, match="clip.wav: 3.40 s .* --long_clips crop"):
        wc.apply_long_clips([long], ["clip.wav"], limit, "error", 32000)
    assert wc.apply_long_clips([long[:limit]], ["ok"], limit, "error", 32000)[0].size == limit
    cropped = wc.apply_long_clips([long], ["clip.wav"], limit, "crop", 32000)[0]
    np.testing.assert_array_equal(cropped, long[:limit])  # 10 s, capped at the tiny model's 2.56 s
    # the tiny model holds 2.56 s, so crop/windows are exercised with a window that fits it
    rows = wc.encode_clips(model, [long, tone(1.0)], batch_size=128, window=64000)
    parts = [long[:64000], long[64000:]]
    embs = np.stack([model.encode_audio(p[None]).numpy()[0] for p in parts])
    mean = embs.mean(0) / np.linalg.norm(embs.mean(0))
    np.testing.assert_allclose(rows[0], mean, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="long_clips must be one of"):
        wc.apply_long_clips([long], ["x"], limit, "truncate", 32000)


def test_read_clips_formats(setup, tmp_path):
    root, _, _, _ = setup
    paths, caps = wc.read_clips(str(root / "test.json"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["dog.wav", "rain.flac", "bird.wav"]
    assert caps == [c for group in CAPTIONS for c in group]
    data = {"num_captions_per_audio": 5,
            "data": [{"audio": str(root / "dog.wav"), **{f"caption_{j}": f"cap {j}" for j in range(1, 6)}}]}
    (tmp_path / "wavcaps.json").write_text(json.dumps(data))
    paths, caps = wc.read_clips(str(tmp_path / "wavcaps.json"))
    assert paths == [str(root / "dog.wav")] and caps == [f"cap {j}" for j in range(1, 6)]
    (tmp_path / "four.json").write_text(json.dumps([{"audio_id": str(root / "dog.wav"), "output": ["a"] * 4}]))
    with pytest.raises(EvalInputError, match="exactly 5 captions per clip.*has 4"):
        wc.read_clips(str(tmp_path / "four.json"))


def test_cli_evaluate_ase_prints_and_reports(setup, tmp_path, monkeypatch, capsys):
    from fusionaudio.retrieval.cli import main

    root, ckpt, bert, model = setup
    out = tmp_path / "ret.json"
    argv = ["fusionaudio.retrieval", "evaluate", "--arch", "ase", "--checkpoint", str(ckpt), "--text_model", str(bert),
            "--input", str(root / "test.json"), "--output", str(out), "--batch_size", "7"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    text = capsys.readouterr().out
    line = re.search(r"test: Caption to audio: r1: (\d+\.\d\d), r5: .* mAP10: (\d+\.\d{3})", text)
    assert line and "Audio to caption: r1:" in text and "###### Best Metrics {'t2a': [" in text
    report = json.loads(out.read_text())
    paths, caps = wc.read_clips(str(root / "test.json"))
    waves = [model.load_audio(p) for p in paths]
    expected = wavcaps_metrics(wc.encode_clips(model, waves, 7), wc.encode_captions(model, caps, 7))
    for direction in ("t2a", "a2t"):
        assert report["meta"]["wavcaps"][direction] == pytest.approx(expected[direction])
    assert report["metrics"]["t2a_r1"] == pytest.approx(expected["t2a"][0]) and report["meta"]["protocol"] == "wavcaps"
    assert line.group(1) == f"{expected['t2a'][0]:.2f}" and (tmp_path / "ret.md").is_file()
