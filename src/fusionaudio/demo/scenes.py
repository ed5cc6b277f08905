"""Seeded synthetic sound scenes with captions, QA pairs and attribute scoring.

A *scene* is a short mono clip (16 kHz, 2-10 s) holding 1-4 non-overlapping
events, in order, separated by silence (a -70 dBFS noise floor).  Event types:

* ``tone``   - a pure sine, pitch band ``low``/``mid``/``high`` (:data:`PITCH_BANDS`)
* ``chirp``  - an exponential sweep inside one pitch band, ``rising`` or ``falling``
* ``noise``  - a burst of ``white`` or ``muffled`` (low-passed at 500 Hz) noise
* ``clicks`` - a train of 2-5 short broadband clicks

Every event is ``loud`` (-8 dBFS peak) or ``quiet`` (-26 dBFS peak); tones,
chirps and noise bursts are ``short`` (0.2-0.5 s) or ``long`` (0.9-1.5 s).

Each clip gets one caption record and a few QA records in the training format
``{"audio_id", "instruction", "input", "output", "dataset": "synth", "task"}``
(``task`` is ``"caption"`` or ``"qa"``), and its ground truth goes to
``scenes.jsonl`` (:mod:`fusionaudio.demo.score` parses a caption back into
attributes and scores it against the scene).  Everything is a pure function of
``(seed, clip index)``, so output is bit-reproducible for a seed.

CLI::

    python -m fusionaudio.demo.scenes --out_dir DIR --n_train 400 --n_test 100 --seed 0
    python -m fusionaudio.demo.scenes --out_dir data/example --demo   # bundled example files
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

SAMPLE_RATE = 16000
EVENT_TYPES = ("tone", "chirp", "noise", "clicks")
PITCH_BANDS = {"low": (150.0, 400.0), "mid": (500.0, 1200.0), "high": (1600.0, 4000.0)}
LOUDNESS_DBFS = {"quiet": -26.0, "loud": -8.0}  # peak level of the event
LENGTH_RANGES_S = {"short": (0.2, 0.5), "long": (0.9, 1.5)}
CHIRP_DIRECTIONS = ("rising", "falling")
NOISE_COLOURS = ("white", "muffled")
CLICK_COUNTS = (2, 3, 4, 5)
CLICK_INTERVAL_S = (0.12, 0.3)
CLICK_LEN_S = 0.004
LEAD_S, GAP_S, TAIL_S = (0.1, 0.5), (0.2, 0.8), (0.2, 1.0)
MIN_CLIP_S, MAX_CLIP_S = 2.0, 10.0
RAMP_S = 0.01
NOISE_FLOOR_DBFS = -70.0  # RMS of the background
MUFFLED_CUTOFF_HZ = 500.0

_LOWPASS = butter(4, MUFFLED_CUTOFF_HZ, fs=SAMPLE_RATE, output="sos")
_NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_ORD = {0: "first", 1: "second", 2: "third", 3: "fourth"}

# --------------------------------------------------------------------------- scenes


def _event(rng: np.random.Generator, prev_type: str | None = None) -> dict:
    """Sample one event's attributes (everything but its start time).

    Two click trains in a row are not allowed: with a short gap they would be
    indistinguishable from one longer train.
    """
    types = [t for t in EVENT_TYPES if not (t == "clicks" == prev_type)]
    typ = types[rng.integers(len(types))]
    loud = ("quiet", "loud")[rng.integers(2)]
    ev = {"type": typ, "variant": None, "pitch": None, "freq_hz": None, "loudness": loud,
          "level_dbfs": LOUDNESS_DBFS[loud], "length": None, "n_clicks": None,
          "click_interval": None, "start": 0.0, "duration": 0.0}
    if typ in ("tone", "chirp"):
        ev["pitch"] = ("low", "mid", "high")[rng.integers(3)]
        lo, hi = PITCH_BANDS[ev["pitch"]]
        lo, hi = lo * 1.05, hi / 1.05  # keep energy well inside the band
        if typ == "tone":
            f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            ev["freq_hz"] = [round(f, 1)] * 2
        else:
            ev["variant"] = CHIRP_DIRECTIONS[rng.integers(2)]
            f0 = float(np.exp(rng.uniform(np.log(lo), np.log(hi / 1.5))))
            f1 = float(np.exp(rng.uniform(np.log(f0 * 1.5), np.log(hi))))
            ev["freq_hz"] = [round(f0, 1), round(f1, 1)][:: 1 if ev["variant"] == "rising" else -1]
    if typ == "noise":
        ev["variant"] = NOISE_COLOURS[rng.integers(2)]
    if typ == "clicks":
        ev["n_clicks"] = int(CLICK_COUNTS[rng.integers(len(CLICK_COUNTS))])
        ev["click_interval"] = round(float(rng.uniform(*CLICK_INTERVAL_S)), 3)
        ev["duration"] = round((ev["n_clicks"] - 1) * ev["click_interval"] + CLICK_LEN_S, 3)
    else:
        ev["length"] = ("short", "long")[rng.integers(2)]
        ev["duration"] = round(float(rng.uniform(*LENGTH_RANGES_S[ev["length"]])), 3)
    return ev


def sample_scene(rng: np.random.Generator) -> dict:
    """Sample a scene: ``{"duration": s, "sample_rate": 16000, "events": [...]}``.

    Events are in time order, never overlap and are separated by 0.2-0.8 s gaps
    (never two click trains in a row);
    times are rounded to 1 ms (= 16 samples), so they map to exact sample indices.
    """
    t = float(rng.uniform(*LEAD_S))
    events = []
    for _ in range(int(rng.integers(1, 5))):
        ev = _event(rng, events[-1]["type"] if events else None)
        ev["start"] = round(t, 3)
        events.append(ev)
        t = ev["start"] + ev["duration"] + float(rng.uniform(*GAP_S))
    end = events[-1]["start"] + events[-1]["duration"]
    duration = min(MAX_CLIP_S, max(MIN_CLIP_S, end + float(rng.uniform(*TAIL_S))))
    return {"duration": round(duration, 3), "sample_rate": SAMPLE_RATE, "events": events}


def _render_event(ev: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(round(ev["duration"] * sr))
    t = np.arange(n) / sr
    if ev["type"] == "tone":
        x = np.sin(2 * np.pi * ev["freq_hz"][0] * t + rng.uniform(0, 2 * np.pi))
    elif ev["type"] == "chirp":  # exponential sweep f0 -> f1
        f0, f1 = ev["freq_hz"]
        k, T = f1 / f0, n / sr
        x = np.sin(2 * np.pi * f0 * T / np.log(k) * (k ** (t / T) - 1.0))
    elif ev["type"] == "noise":
        x = rng.standard_normal(n)
        if ev["variant"] == "muffled":
            x = sosfilt(_LOWPASS, x)
    else:  # clicks: exponentially decaying noise bursts
        x = np.zeros(n)
        m = int(round(CLICK_LEN_S * sr))
        for j in range(ev["n_clicks"]):
            i = min(int(round(j * ev["click_interval"] * sr)), n - m)
            x[i:i + m] += rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 5))
    if ev["type"] != "clicks":
        r = min(int(RAMP_S * sr), n // 2)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        x[:r] *= ramp
        x[n - r:] *= ramp[::-1]
    return x / np.max(np.abs(x)) * 10 ** (ev["level_dbfs"] / 20)


def render_scene(scene: dict, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Render ``scene`` to a float64 waveform in [-1, 1] at ``scene["sample_rate"]``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sr = scene.get("sample_rate", SAMPLE_RATE)
    y = rng.standard_normal(int(round(scene["duration"] * sr))) * 10 ** (NOISE_FLOOR_DBFS / 20)
    for ev in scene["events"]:
        x = _render_event(ev, rng, sr)
        i = int(round(ev["start"] * sr))
        y[i:i + len(x)] += x[: len(y) - i]
    return np.clip(y, -1.0, 1.0)


def write_wav(path: str | Path, y: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM, quantised explicitly (round to nearest) for reproducibility."""
    pcm = np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(str(path), pcm, sr, subtype="PCM_16")


# --------------------------------------------------------------------------- text

# One word per attribute value in captions. Synonyms (quiet/soft/faint vs loud, short/brief vs
# long, mid/medium) split a value's probability over several first tokens, so a calibrated
# model decoded greedily (or at low temperature) names the value with the fewest synonyms:
# the old demo said "long, loud" for a short, quiet chirp. The parser still reads synonyms.
_PITCH_WORDS = {"low": "low-pitched", "mid": "mid-pitched", "high": "high-pitched"}
_CAPTION_INSTRUCTIONS = [
    "Describe the audio.", "Write a caption for this audio clip.",
    "What can be heard in this recording?", "Describe the sounds in the clip in order.",
    "Generate a detailed caption for the audio.",
]


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def event_phrase(ev: dict) -> str:
    """The noun phrase for one event, e.g. ``"a short, loud, high-pitched tone"``: one fixed
    wording per event type, every attribute named by one word (see ``_PITCH_WORDS``)."""
    loud = ev["loudness"]
    if ev["type"] == "clicks":
        return f"{_NUM[ev['n_clicks']]} {loud} clicks"
    adj = f"{ev['length']}, {loud}"
    if ev["type"] == "tone":
        return f"a {adj}, {_PITCH_WORDS[ev['pitch']]} tone"
    if ev["type"] == "chirp":
        return f"a {adj}, {_PITCH_WORDS[ev['pitch']]} {ev['variant']} chirp"
    return f"a {adj} burst of {ev['variant']} noise"


def make_caption(scene: dict, rng: np.random.Generator) -> str:
    """Caption stating every event's attributes in order, e.g.
    ``"Three sounds: a long, loud, high-pitched tone, then a short, quiet burst of white
    noise, and finally two loud clicks."`` (the preamble and the links between events vary)."""
    phrases = [event_phrase(ev) for ev in scene["events"]]
    n = len(phrases)
    if n == 1:
        pre = _pick(rng, ["", "a single sound: ", "one sound: "])
    else:
        pre = _pick(rng, ["", f"{_NUM[n]} sounds: ", f"a sequence of {_NUM[n]} sounds: ",
                          f"there are {_NUM[n]} sounds: "])
    body = phrases[0]
    for i, p in enumerate(phrases[1:], start=1):
        last = i == n - 1
        body += _pick(rng, [", then ", ", followed by ", ", and finally " if last else ", and then "]) + p
    return _cap(pre + body + ".")


def short_name(ev: dict) -> str:
    """Short answer naming an event: 'a high-pitched tone', 'a rising chirp', ..."""
    if ev["type"] == "tone":
        return f"a {_PITCH_WORDS[ev['pitch']]} tone"
    if ev["type"] == "chirp":
        return f"a {ev['variant']} chirp"
    if ev["type"] == "noise":
        return f"a burst of {ev['variant']} noise"
    return f"{_NUM[ev['n_clicks']]} clicks"


_PITCH_ANSWER = {"low": "Low.", "mid": "Medium.", "high": "High."}


def make_qa(scene: dict, rng: np.random.Generator, n_qa: int = 4) -> list[tuple[str, str]]:
    """Up to ``n_qa`` (question, short answer) pairs about count, order, presence,
    pitch, loudness, chirp direction, click count and length."""
    evs, n = scene["events"], len(scene["events"])
    cands = [(_pick(rng, ["How many sounds are there?", "How many distinct sounds can you hear?",
                          "How many sound events occur in the clip?"]), f"{_cap(_NUM[n])}."),
             (_pick(rng, ["Which sound comes first?", "What is the first sound?"]),
              f"{_cap(short_name(evs[0]))}.")]
    if n > 1:
        cands.append((_pick(rng, ["Which sound comes last?", "What is the last sound?"]),
                      f"{_cap(short_name(evs[-1]))}."))
    present = sorted({e["type"] for e in evs})
    absent = [t for t in EVENT_TYPES if t not in present]
    typ = _pick(rng, present if (not absent or rng.random() < 0.5) else absent)
    noun = {"tone": "a steady tone", "chirp": "a chirp", "noise": "a burst of noise",
            "clicks": "any clicking"}[typ]
    cands.append((f"Is there {noun}?", "Yes." if typ in present else "No."))
    for typ in present:  # one attribute question about the first event of each type
        same = [e for e in evs if e["type"] == typ]
        ev = same[0]
        name = "noise burst" if typ == "noise" else typ
        ref = f"the first {name}" if len(same) > 1 else f"the {name}"
        if typ == "tone":
            cands.append((f"Is {ref} high, medium or low in pitch?",
                          _PITCH_ANSWER[ev["pitch"]]))
        elif typ == "chirp":
            cands.append((f"Is {ref} rising or falling?", f"{_cap(ev['variant'])}."))
        elif typ == "noise":
            cands.append((f"Is {ref} loud or quiet?", f"{_cap(ev['loudness'])}."))
        else:
            cands.append(("How many clicks are there?", f"{_cap(_NUM[ev['n_clicks']])}."))
    k = int(rng.integers(n))
    ordinal = f"the {_ORD[k]} sound" if n > 1 else "the sound"
    cands.append((f"Is {ordinal} loud or quiet?", f"{_cap(evs[k]['loudness'])}."))
    if evs[k]["length"]:
        cands.append((f"Is {ordinal} short or long?", f"{_cap(evs[k]['length'])}."))
    if evs[k]["pitch"]:
        cands.append((f"Is {ordinal} high, medium or low in pitch?", _PITCH_ANSWER[evs[k]["pitch"]]))
    keep = sorted(rng.choice(len(cands), size=min(n_qa, len(cands)), replace=False).tolist())
    return [cands[i] for i in keep]


def _record(audio_id: str, instruction: str, output: str, task: str) -> dict:
    return {"audio_id": audio_id, "instruction": instruction, "input": "", "output": output,
            "dataset": "synth", "task": task}


def scene_records(scene: dict, audio_id: str, rng: np.random.Generator, n_qa: int = 4) -> list[dict]:
    """One caption record followed by ``n_qa`` QA records for a clip."""
    recs = [_record(audio_id, _pick(rng, _CAPTION_INSTRUCTIONS), make_caption(scene, rng), "caption")]
    recs += [_record(audio_id, q, a, "qa") for q, a in make_qa(scene, rng, n_qa)]
    return recs


def load_scenes(path: str | Path) -> dict[str, dict]:
    """Read ``scenes.jsonl`` into ``{clip (audio_id): scene}``."""
    with open(path, encoding="utf-8") as f:
        return {s["clip"]: s for s in map(json.loads, filter(str.strip, f))}


# --------------------------------------------------------------------------- generation


def _rngs(seed: int, idx: int) -> list[np.random.Generator]:
    """Independent scene / audio / text generators for clip ``idx`` of ``seed``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, idx]).spawn(3)]


def _dump_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(out_dir: str | Path, n_train: int = 400, n_test: int = 100, seed: int = 0,
             n_qa: int = 4) -> dict:
    """Write ``audio/clip_XXXXX.wav``, ``train.json``, ``test.json`` and ``scenes.jsonl``.

    Clip ``i`` depends only on ``(seed, i)``; the train/test split is a seeded
    permutation of clip indices (by clip, so a clip's records never straddle it).
    ``audio_id`` / ``clip`` are paths relative to ``out_dir``.  Returns a summary.
    """
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    perm = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1])).permutation(n)
    test_ids = set(perm[:n_test].tolist())
    split = {"train": [], "test": []}
    with open(out / "scenes.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            r_scene, r_audio, r_text = _rngs(seed, i)
            scene = sample_scene(r_scene)
            clip = f"audio/clip_{i:05d}.wav"
            write_wav(out / clip, render_scene(scene, r_audio))
            name = "test" if i in test_ids else "train"
            split[name] += scene_records(scene, clip, r_text, n_qa)
            f.write(json.dumps({"clip": clip, "split": name, **scene}) + "\n")
    for name, recs in split.items():
        _dump_json(recs, out / f"{name}.json")
    return {"out_dir": str(out), "clips": n, "train_records": len(split["train"]),
            "test_records": len(split["test"])}


def _ev(typ, start, duration, loudness, pitch=None, variant=None, freq=None, length=None,
        n_clicks=None, interval=None) -> dict:
    return {"type": typ, "variant": variant, "pitch": pitch, "freq_hz": freq, "loudness": loudness,
            "level_dbfs": LOUDNESS_DBFS[loudness], "length": length, "n_clicks": n_clicks,
            "click_interval": interval, "start": start, "duration": duration}


#: The bundled demo scene (``data/example/demo_clip.wav``, 5.3 s).
DEMO_SCENE = {"duration": 5.3, "sample_rate": SAMPLE_RATE, "events": [
    _ev("tone", 0.3, 1.0, "loud", pitch="high", freq=[2000.0, 2000.0], length="long"),
    _ev("chirp", 1.8, 0.45, "quiet", pitch="mid", variant="rising", freq=[600.0, 1100.0], length="short"),
    _ev("noise", 2.8, 1.0, "loud", variant="white", length="long"),
    _ev("clicks", 4.3, 0.504, "quiet", n_clicks=3, interval=0.25),
]}


def write_demo(out_dir: str | Path = "data/example") -> None:
    """Write ``demo_clip.wav``, ``train_data_example.json`` and ``inference_data_example.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "demo_clip.wav", render_scene(DEMO_SCENE, 0))
    rng = np.random.default_rng(0)
    caption = make_caption(DEMO_SCENE, rng)
    qa = make_qa(DEMO_SCENE, rng, n_qa=6)
    train = [_record("demo_clip.wav", "Describe the audio.", caption, "caption")]
    train += [_record("demo_clip.wav", q, a, "qa") for q, a in qa]
    _dump_json(train, out / "train_data_example.json")
    infer = [_record("demo_clip.wav", "Describe the audio.", caption, "caption")]
    infer += [_record("demo_clip.wav", q, a, "qa") for q, a in qa[:2]]
    _dump_json(infer, out / "inference_data_example.json")


def main(argv: list[str] | None = None) -> None:
    from fusionaudio.commands import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m fusionaudio.demo.scenes", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--out_dir", required=True, help="where the clips and the train/test JSONs go")
    p.add_argument("--n_train", type=int, default=400, help="training scenes")
    p.add_argument("--n_test", type=int, default=100, help="held-out scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and their texts")
    p.add_argument("--n_qa", type=int, default=4, help="QA records per clip (besides the caption)")
    p.add_argument("--demo", action="store_true", help="write the bundled demo clip + example JSONs instead")
    a = p.parse_args(argv)
    if a.demo:
        write_demo(a.out_dir)
        print(f"wrote demo example files to {a.out_dir}")
    else:
        print(json.dumps(generate(a.out_dir, a.n_train, a.n_test, a.seed, a.n_qa)))


if __name__ == "__main__":
    main()
