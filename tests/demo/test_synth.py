"""Tests for fusionaudio.demo.scenes: determinism, split, records, caption scoring, audio content."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.demo import scenes as synth
from fusionaudio.demo import score as synth_score
from fusionaudio.gama.data import select_records, validate_records

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    t = time.perf_counter()
    synth.generate(out, n_train=24, n_test=8, seed=0)
    return out, time.perf_counter() - t


def _files(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_layout_and_speed(gen):
    out, elapsed = gen
    assert sorted(p.name for p in out.iterdir()) == ["audio", "scenes.jsonl", "test.json", "train.json"]
    assert len(list((out / "audio").glob("*.wav"))) == 32
    assert elapsed < 10  # ~0.15 s in practice; generous for a shared box


def test_same_seed_identical_bytes(gen, tmp_path):
    out, _ = gen
    synth.generate(tmp_path, n_train=24, n_test=8, seed=0)
    assert _files(tmp_path) == _files(out)


def test_different_seed_differs(gen, tmp_path):
    out, _ = gen
    synth.generate(tmp_path, n_train=24, n_test=8, seed=1)
    a, b = _files(out), _files(tmp_path)
    assert a["train.json"] != b["train.json"] and a["scenes.jsonl"] != b["scenes.jsonl"]
    assert a["audio/clip_00000.wav"] != b["audio/clip_00000.wav"]


def test_wav_format_and_duration(gen):
    out, _ = gen
    for p in (out / "audio").glob("*.wav"):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 2.0 <= info.duration <= 10.0


def test_split_disjoint_and_records(gen):
    out, _ = gen
    scenes = synth.load_scenes(out / "scenes.jsonl")
    ids = {}
    for split in ("train", "test"):
        recs, report = select_records(out / f"{split}.json", deep=True)
        assert report.ok and len(recs) == report.n_records
        ids[split] = {r["audio_id"] for r in recs}
        assert all(scenes[a]["split"] == split for a in ids[split])
        for r in recs:
            assert set(r) == {"audio_id", "instruction", "input", "output", "dataset", "task"}
            assert r["dataset"] == "synth" and r["task"] in ("caption", "qa") and r["input"] == ""
            if r["task"] == "qa":
                assert len(r["output"].split()) <= 5 and r["output"].endswith(".")
        by_clip = {a: [r["task"] for r in recs if r["audio_id"] == a] for a in ids[split]}
        assert all(t.count("caption") == 1 and t.count("qa") >= 2 for t in by_clip.values())
    assert (len(ids["train"]), len(ids["test"])) == (24, 8)
    assert not ids["train"] & ids["test"]
    assert ids["train"] | ids["test"] == set(scenes)


def test_own_captions_score_perfectly(gen):
    out, _ = gen
    scenes = synth.load_scenes(out / "scenes.jsonl")
    recs = json.loads((out / "train.json").read_text()) + json.loads((out / "test.json").read_text())
    caps = [r for r in recs if r["task"] == "caption"]
    assert len(caps) == 32
    for r in caps:
        acc = synth_score.attribute_accuracy(r["output"], scenes[r["audio_id"]])
        assert acc["overall"] == 1.0, (r["output"], acc)
        assert all(v in (None, 1.0) for v in acc.values())


def test_captions_name_each_value_with_one_word():
    """Every attribute value has exactly one wording in captions: a synonym set (quiet/soft/
    faint against loud) would split a value's probability over several tokens and bias a
    greedily decoded model towards the value with fewer synonyms."""
    rng = np.random.default_rng(5)
    words: dict[tuple[str, str], set[str]] = {}
    for _ in range(300):
        scene = synth.sample_scene(rng)
        for ev in scene["events"]:
            phrase = synth.event_phrase(ev)
            rest = phrase.replace(",", "").split()
            for attr in ("loudness", "length", "pitch", "variant"):
                if ev[attr] is not None:
                    hits = {w for w in rest if w.startswith(ev[attr][:3])}
                    words.setdefault((attr, ev[attr]), set()).update(hits)
        assert not {"soft", "faint", "brief", "medium-pitched", "beep", "sweep", "hiss", "rumble",
                    "upward", "downward", "low-passed"} & set(synth.make_caption(scene, rng).lower()
                                                               .replace(",", "").replace(".", "").split())
    assert words[("loudness", "quiet")] == {"quiet"} and words[("loudness", "loud")] == {"loud"}
    assert words[("length", "short")] == {"short"} and words[("length", "long")] == {"long"}
    assert {v: words[("pitch", v)] for v in ("low", "mid", "high")} == {
        "low": {"low-pitched"}, "mid": {"mid-pitched"}, "high": {"high-pitched"}}
    assert words[("variant", "rising")] == {"rising"} and words[("variant", "muffled")] == {"muffled"}


def test_qa_asks_pitch_of_a_tonal_event_by_position():
    rng = np.random.default_rng(0)
    asked = set()
    for _ in range(200):
        scene = synth.sample_scene(rng)
        for q, a in synth.make_qa(scene, rng, n_qa=20):
            if q.startswith("Is the ") and q.endswith("sound high, medium or low in pitch?"):
                k = 0 if q == "Is the sound high, medium or low in pitch?" else \
                    ["first", "second", "third", "fourth"].index(q.split()[2])
                ev = scene["events"][k]
                assert a == {"low": "Low.", "mid": "Medium.", "high": "High."}[ev["pitch"]]
                asked.add(a)
    assert asked == {"Low.", "Medium.", "High."}


def _rms(y, t0, t1, sr=16000):
    seg = y[int(t0 * sr):int(t1 * sr)]
    return float(np.sqrt(np.mean(seg ** 2)))


def test_audio_contains_the_events():
    rng = np.random.default_rng(7)
    for k in range(40):
        scene = synth.sample_scene(rng)
        y = synth.render_scene(scene, k)
        evs = scene["events"]
        gaps = [(0.0, evs[0]["start"])] + [(a["start"] + a["duration"], b["start"]) for a, b in zip(evs, evs[1:])]
        silence = max(_rms(y, t0 + 0.02, t1 - 0.02) for t0, t1 in gaps if t1 - t0 > 0.06)
        for ev in evs:
            if ev["type"] == "clicks":  # each click, not the sparse train as a whole
                t0s = [ev["start"] + j * ev["click_interval"] for j in range(ev["n_clicks"])]
                rms = min(_rms(y, t0, t0 + synth.CLICK_LEN_S) for t0 in t0s)
            else:
                rms = _rms(y, ev["start"], ev["start"] + ev["duration"])
            assert rms > 10 * silence, (ev, rms, silence)
            peak_db = 20 * np.log10(np.abs(y[int(ev["start"] * 16000):int((ev["start"] + ev["duration"]) * 16000) + 1]).max())
            assert abs(peak_db - synth.LOUDNESS_DBFS[ev["loudness"]]) < 0.5
            if ev["type"] in ("tone", "chirp"):
                seg = y[int(ev["start"] * 16000):int((ev["start"] + ev["duration"]) * 16000)]
                spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
                f_peak = np.fft.rfftfreq(len(seg), 1 / 16000)[spec.argmax()]
                lo, hi = synth.PITCH_BANDS[ev["pitch"]]
                assert lo <= f_peak <= hi, (ev, f_peak)


def _centroid(seg, sr=16000):
    spec = np.abs(np.fft.rfft(seg))
    return float((np.fft.rfftfreq(len(seg), 1 / sr) * spec).sum() / spec.sum())


def test_chirp_direction_and_noise_colour():
    for variant in ("rising", "falling"):
        f = [600.0, 1100.0] if variant == "rising" else [1100.0, 600.0]
        scene = {"duration": 2.0, "events": [synth._ev("chirp", 0.5, 1.0, "loud", pitch="mid",
                                                        variant=variant, freq=f, length="long")]}
        y = synth.render_scene(scene, 0)
        first, second = _centroid(y[8000:16000]), _centroid(y[16000:24000])
        assert (first < second) == (variant == "rising")
    cents = {}
    for colour in ("white", "muffled"):
        scene = {"duration": 2.0, "events": [synth._ev("noise", 0.5, 1.0, "loud", variant=colour, length="long")]}
        cents[colour] = _centroid(synth.render_scene(scene, 0)[8000:24000])
    assert cents["muffled"] < 1000 < 3000 < cents["white"]


def test_bundled_demo_matches_generator(tmp_path):
    ex = REPO / "data" / "example"
    assert (ex / "demo_clip.wav").stat().st_size < 400_000
    synth.write_demo(tmp_path)
    for name in ("demo_clip.wav", "train_data_example.json", "inference_data_example.json"):
        assert (tmp_path / name).read_bytes() == (ex / name).read_bytes(), name
        if name.endswith(".json"):
            recs = json.loads((ex / name).read_text())
            assert validate_records(recs, ex / name, deep=True).ok
    cap = json.loads((ex / "train_data_example.json").read_text())[0]["output"]
    assert synth_score.attribute_accuracy(cap, synth.DEMO_SCENE)["overall"] == 1.0


def test_cli(tmp_path):
    synth.main(["--out_dir", str(tmp_path), "--n_train", "3", "--n_test", "2", "--seed", "5", "--n_qa", "2"])
    recs = json.loads((tmp_path / "train.json").read_text())
    assert len(recs) == 3 * 3 and len(list((tmp_path / "audio").glob("*.wav"))) == 5
