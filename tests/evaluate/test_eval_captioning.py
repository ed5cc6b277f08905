"""Captioning metrics: hand-computed BLEU, agreement with pycocoevalcap, the full PTB/METEOR run."""

import json
import math
import shutil

import pytest

from fusionaudio.evaluate import caption_metrics as cm
from fusionaudio.evaluate import captioning as cap
from fusionaudio.evaluate.records import EvalInputError


def test_bleu1_by_hand():
    # clipped unigram precision 3/4, hypothesis longer than the reference -> no brevity penalty
    scores, _, _ = cm.caption_scores({"a": "a dog barks loudly"}, {"a": ["a dog barks"]}, ["bleu"], "simple")
    assert scores["BLEU_1"] == pytest.approx(0.75, abs=1e-6)
    # precision 1, but c=2 < r=3: brevity penalty exp(1 - 3/2)
    scores, _, _ = cm.caption_scores({"a": "a dog"}, {"a": ["a dog barks"]}, ["bleu"], "simple")
    assert scores["BLEU_1"] == pytest.approx(math.exp(1 - 3 / 2), abs=1e-6)
    # counts are clipped to the reference: "dog dog dog" vs "a dog" -> 1/3 (closest ref length 2 < 3, BP = 1)
    scores, _, _ = cm.caption_scores({"a": "dog dog dog"}, {"a": ["a dog", "dog a b c"]}, ["bleu"], "simple")
    assert scores["BLEU_1"] == pytest.approx(1 / 3, abs=1e-6)


def test_simple_tokenizer():
    assert cm.simple_tokenize("A dog's bark, LOUD!  Then -- silence...") == "a dog 's bark loud then silence"


def test_agrees_with_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds = {"x": "a man speaks while a car passes", "y": "rain falls on a roof", "z": "birds chirp"}
    refs = {"x": ["a man talks as a car drives by", "a man is speaking and cars pass"],
            "y": ["heavy rain falls on a metal roof", "rain is falling"],
            "z": ["birds are chirping in the distance", "several birds sing", "a bird chirps"]}
    ours, unavailable, per_clip = cm.caption_scores(preds, refs, ["bleu", "rouge", "cider"], "simple")
    gts = {k: v for k, v in refs.items()}
    res = {k: [v] for k, v in preds.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert ours[f"BLEU_{n + 1}"] == pytest.approx(bleu[n])
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    cider, each = Cider().compute_score(gts, res)
    assert ours["CIDEr"] == pytest.approx(cider)
    assert per_clip["z"]["CIDEr"] == pytest.approx(each[2])
    assert not unavailable and "SPICE" not in ours


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for the PTB tokenizer and METEOR")
def test_full_run_with_ptb_and_meteor(tmp_path):
    recs = [
        {"audio_id": "c1", "output": "A dog barks loudly.", "prediction": "A dog is barking."},
        {"audio_id": "c1", "output": "A dog is barking!", "prediction": "A dog is barking."},
        {"audio_id": "c2", "output": ["Rain falls on a roof.", "Heavy rain is falling."], "prediction": "Rain falls."},
        {"audio_id": "c3", "output": "A man speaks while cars pass by.", "prediction": ""},
        {"audio_id": "c3", "output": "A man is talking near a road.", "prediction": "something else"},
    ]
    src = tmp_path / "preds.json"
    src.write_text(json.dumps(recs))
    res = cap.evaluate_captioning(str(src), str(tmp_path / "out" / "cap.json"))
    m = res["metrics"]
    assert res["meta"]["n_clips"] == 3 and res["meta"]["n_references"] == 6
    assert res["meta"]["n_clips_with_conflicting_predictions"] == 1
    for key in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert isinstance(m[key], float) and m[key] >= 0
    assert 0 < m["METEOR"] < 1 and 0 < m["BLEU_1"] <= 1
    # PTB tokenisation removes punctuation and lower-cases: c1's hypothesis matches a reference exactly
    details = {d["clip"]: d for d in res["details"]}
    assert details["c1"]["METEOR"] > details["c2"]["METEOR"] > 0 and details["c3"]["CIDEr"] == 0
    if res["unavailable"].get("SPICE"):  # no Stanford models here: reported as missing, never as 0
        assert m["SPICE"] is None and m["SPIDEr"] is None and "SPIDEr" in res["unavailable"]
    md = (tmp_path / "out" / "cap.md").read_text()
    assert "| METEOR |" in md and "Unavailable" in md


def test_bad_inputs(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"audio_id": "a", "output": "x", "prediction": "y"}, {"audio_id": "b", "prediction": "y"}]))
    with pytest.raises(EvalInputError, match=r"p\.json: record 1: missing field 'output'"):
        cap.evaluate_captioning(str(p), tokenizer="simple")
    p.write_text(json.dumps([{"audio_id": "a", "output": [], "prediction": "y"}]))
    with pytest.raises(EvalInputError, match="record 0: field 'output' should be a non-empty list"):
        cap.evaluate_captioning(str(p), tokenizer="simple")
    p.write_text(json.dumps([{"audio_id": "a", "output": "x y", "prediction": None},
                             {"audio_id": "b", "output": "z", "prediction": "z"}, {"audio_id": "c", "output": "w"}]))
    with pytest.raises(EvalInputError, match="record 2: missing field 'prediction'"):
        cap.evaluate_captioning(str(p), tokenizer="simple")
    p.write_text(json.dumps(json.loads(p.read_text())[:2]))
    res = cap.evaluate_captioning(str(p), str(tmp_path / "o.json"), metrics="bleu,rouge", tokenizer="simple")
    assert res["meta"]["n_null_predictions"] == 1 and res["details"][0]["prediction"] == ""  # failed = empty
    with pytest.raises(ValueError, match="unknown caption metrics"):
        cm.caption_scores({"a": "x"}, {"a": ["x"]}, "bleu,spicy", "simple")


def test_ltu_cleaning():
    from fusionaudio.evaluate.captioning_ltu import ltu_clean

    assert ltu_clean("Audio caption: A dog, barking!") == "a dog barking"
    assert ltu_clean("Caption: x: Rain falls.") == "rain falls"  # text after the last colon
    assert ltu_clean("A dog barks.") == "a dog barks"  # no prefix: kept whole
    assert ltu_clean("A dog barks.", strict_first_char=True) == " dog barks"  # LTU's [1:] without a colon


def test_ltu_protocol_five_trials(tmp_path):
    import numpy as np

    refs = {"c1": [f"a dog barks {w}" for w in "abcde"], "c2": [f"rain falls {w}" for w in "vwxyz"]}
    recs = []
    for clip, rs in refs.items():
        for t, r in enumerate(rs):  # one record per reference, each with its own answer
            answer = f"Audio caption: {rs[t].capitalize()}." if clip == "c1" else "Audio caption: Rain."
            recs.append({"audio_id": f"/data/{clip}.wav", "output": r, "prediction": answer})
    src = tmp_path / "p.json"
    src.write_text(json.dumps(recs))
    res = cap.evaluate_captioning(str(src), str(tmp_path / "o.json"), protocol="ltu", tokenizer="simple")
    per_trial = []
    for t in range(5):
        preds = {"c1": refs["c1"][t], "c2": "rain"}
        per_trial.append(cm.caption_scores(preds, refs, ["cider"], "simple")[0]["CIDEr"])
    m = res["metrics"]
    assert [d["CIDEr"] for d in res["details"]] == pytest.approx(per_trial)
    assert m["CIDEr_mean"] == pytest.approx(np.mean(per_trial)) and m["CIDEr_std"] == pytest.approx(np.std(per_trial))
    assert res["meta"]["n_clips"] == 2 and res["meta"]["trials"] == 5
    if m["SPICE_mean"] is None:  # no Stanford models: unavailable with a reason, never 0
        assert "SPICE_mean" in res["unavailable"] and m["SPICE_std"] is None
    src.write_text(json.dumps(recs[:9]))
    with pytest.raises(EvalInputError, match=r"clip 'c2.wav' has 4 records, fewer than the 5 trials"):
        cap.evaluate_captioning(str(src), protocol="ltu", tokenizer="simple")
