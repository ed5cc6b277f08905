"""Caption parsing and attribute scoring of the synthetic scenes (fusionaudio.demo.score)."""

import numpy as np

from fusionaudio.demo import scenes as synth
from fusionaudio.demo.score import align_events, attribute_accuracy, parse_caption


def test_many_captions_parse_back():
    """Every template variant parses back exactly (500 random scenes)."""
    rng = np.random.default_rng(123)
    for _ in range(500):
        scene = synth.sample_scene(rng)
        cap = synth.make_caption(scene, rng)
        assert attribute_accuracy(cap, scene)["overall"] == 1.0, cap


def test_wrong_captions_score_below_one():
    scene = synth.DEMO_SCENE
    right = ("Four sounds: a long, loud, high-pitched tone, then a short, quiet, mid-pitched rising chirp, "
             "then a long, loud burst of white noise, then three quiet clicks.")
    assert attribute_accuracy(right, scene)["overall"] == 1.0
    wrong = {
        "loudness": right.replace("long, loud, high", "long, quiet, high"),
        "pitch": right.replace("high-pitched", "low-pitched"),
        "variant": right.replace("rising", "falling"),
        "length": right.replace("short, quiet", "long, quiet"),
        "n_clicks": right.replace("three quiet", "five quiet"),
    }
    for attr, cap in wrong.items():
        acc = attribute_accuracy(cap, scene)
        assert acc[attr] < 1.0 and acc["overall"] < 1.0, attr
    dropped = attribute_accuracy("A loud high-pitched tone, then a loud burst of white noise.", scene)
    assert dropped["count"] == 0.0 and dropped["types"] == 0.5
    assert dropped["pitch"] == 0.5  # the tone is aligned, the missing chirp is not
    swapped = attribute_accuracy(
        "Three quiet clicks, then a long loud burst of white noise, then a short quiet mid rising chirp, "
        "then a long loud high tone.", scene)
    assert swapped["count"] == 1.0 and swapped["types"] == 0.25
    assert attribute_accuracy("Birds are singing.", scene)["overall"] == 0.0


def test_parse_caption_synonyms():
    p = parse_caption("Two sounds: a brief faint deep hum; after that a 4-click train, loud")
    assert p["count"] == 2
    (a, b) = p["events"]
    assert (a["type"], a["length"], a["loudness"], a["pitch"]) == ("tone", "short", "quiet", "low")
    assert (b["type"], b["n_clicks"], b["loudness"]) == ("clicks", 4, "loud")
    (n,) = parse_caption("A long rumble of low-passed noise.")["events"]
    assert (n["type"], n["variant"], n["pitch"]) == ("noise", "muffled", None)


def test_align_events_pairs_same_types_in_order():
    true = [{"type": t} for t in ("tone", "chirp", "noise", "clicks")]
    swapped = [{"type": t} for t in ("chirp", "tone", "noise", "clicks")]
    pairs = align_events(true, swapped)
    assert pairs[2] == 2 and pairs[3] == 3 and len(pairs) == 3  # one of tone/chirp is left unaligned
    assert align_events(true, true) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert align_events(true, [{"type": "noise"}]) == {2: 0}
    assert align_events(true, []) == {}
