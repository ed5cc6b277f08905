"""WavCaps' t2a / a2t arithmetic (tools/utils.py) on cases computed by hand, quirks included."""

import numpy as np
import pytest

from fusionaudio.retrieval import wavcaps_metrics
from fusionaudio.retrieval.metrics import wavcaps_a2t, wavcaps_t2a

# Clip i's ranking of the 15 captions (best first); caption q belongs to clip q // 5.
ORDERS = [[0, 5, 1, 2, 10, 3, 6, 7, 8, 9, 11, 12, 13, 14, 4],
          [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 5, 6, 7, 8, 9],
          [10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]]


def designed_case(rng=None):
    """Clip embeddings e_i; caption q is a unit vector whose cosine with clip i is S[q, i] =
    0.5 - 0.03 * (q's position in ORDERS[i]) - 0.001 * i (no ties). Rows 5i+1..5i+4 of the audio
    rows are noise: the protocol must only read row 5i."""
    rng = rng or np.random.default_rng(0)
    s = np.zeros((15, 3))
    for i, order in enumerate(ORDERS):
        for pos, q in enumerate(order):
            s[q, i] = 0.5 - 0.03 * pos - 0.001 * i
    captions = np.concatenate([s, np.sqrt(1 - (s**2).sum(1, keepdims=True))], axis=1)
    audio_rows = rng.standard_normal((15, 4))
    for i in range(3):
        audio_rows[5 * i] = np.eye(4)[i]
    return audio_rows.astype(np.float32), captions.astype(np.float32)


def test_t2a_by_hand():
    # ranks of the true clip: q0 0 | q1, q2 1 (clip 1 first) | q3, q4 2 | q5..q9 2 | q10 0 | q11..q14 2
    r1, r5, r10, r50, medr, meanr, map10 = wavcaps_t2a(*designed_case())
    assert r1 == pytest.approx(100 * 2 / 15) and r5 == r10 == r50 == 100.0
    assert medr == 3.0  # sorted ranks 0,0,1,1,2,... -> median 2 -> floor + 1
    assert meanr == pytest.approx(24 / 15 + 1)
    assert map10 == pytest.approx(100 * (2 * 1 + 2 / 2 + 11 / 3) / 15)  # MRR@10, not a precision average


def test_a2t_by_hand_divides_by_five():
    # clip 0: positives at 1-based 1, 3, 4, 6 (and 15, outside the top 10): AP = (1/1 + 2/3 + 3/4 + 4/6) / 5
    # clip 1: positives at 11..15 -> rank 10, AP 0 ; clip 2: positives at 1, 12..15 -> AP = (1/1) / 5
    r1, r5, r10, r50, medr, meanr, map10 = wavcaps_a2t(*designed_case())
    assert r1 == r5 == r10 == pytest.approx(200 / 3) and r50 == 100.0
    assert medr == 1.0 and meanr == pytest.approx(10 / 3 + 1)
    assert map10 == pytest.approx(100 * ((1 + 2 / 3 + 3 / 4 + 4 / 6) / 5 + 0 + 1 / 5) / 3)


def test_metrics_dict_order_and_row_use():
    audio, caps = designed_case()
    m = wavcaps_metrics(audio, caps)
    assert list(m) == ["t2a", "a2t"] and all(len(v) == 7 for v in m.values())
    assert m["t2a"] == wavcaps_t2a(audio, caps) and m["a2t"] == wavcaps_a2t(audio, caps)
    other, _ = designed_case(np.random.default_rng(5))  # different noise in rows 5i+1..5i+4
    assert wavcaps_metrics(other, caps) == m
    scaled = audio * 3.0  # cos_sim re-normalises
    np.testing.assert_allclose(wavcaps_metrics(scaled, caps * 2.0)["t2a"], m["t2a"])


def test_ties_follow_reversed_argsort():
    # two identical clips: np.argsort keeps [0, 1] for the tie, reversed -> clip 1 ranks first
    audio = np.repeat(np.eye(2, dtype=np.float32), 5, axis=0)
    audio[5] = audio[0]
    caps = np.tile(np.array([[1.0, 0.0]], np.float32), (10, 1))
    t2a = wavcaps_t2a(audio, caps)
    assert t2a[0] == 50.0 and t2a[4] == 1.0  # clip 1's captions rank 0, clip 0's rank 1 (medr = floor(0.5) + 1)


def test_bad_shapes_are_refused():
    audio, caps = designed_case()
    with pytest.raises(ValueError, match="5 captions per clip"):
        wavcaps_metrics(audio[:14], caps[:14])
    with pytest.raises(ValueError, match="same \\[N, D\\] shape"):
        wavcaps_metrics(audio, caps[:10])
