"""Column labels of the demo encoder's pre-training, and that the pre-training teaches them."""

import pytest
import torch

from fusionaudio.demo import scenes as synth
from fusionaudio.gama.config import AudioEncoderConfig
from fusionaudio.gama.audio_encoder import CavMaeAudioEncoder
from fusionaudio.demo.pretrain import IGNORE, LABELS, column_labels, pretrain_encoder


def _name(label: str, value: int) -> str | None:
    return None if value == IGNORE else LABELS[label][value]


def test_column_labels_of_the_demo_scene():
    lab = column_labels(synth.DEMO_SCENE)  # tone 0.3-1.3 s, chirp 1.8-2.25, noise 2.8-3.8, clicks 4.3/4.55/4.8
    kinds = [LABELS["kind"][k] for k in lab["kind"].tolist()]
    # column c spans frame centres 0.16c + 0.0125 .. + 0.15 s
    assert kinds[0] == "silence" and kinds[1:8] == ["tone"] * 7 and kinds[8] == "silence"
    assert set(kinds[11:14]) == {"chirp"} and kinds[17:23] == ["noise"] * 6
    assert [c for c, k in enumerate(kinds) if k == "clicks"] == [26, 28, 29]
    assert kinds[34:] == ["silence"] * 30  # the clip ends at 5.3 s; the rest is padding
    assert {_name("pitch", lab["pitch"][c]) for c in range(1, 8)} == {"high"}
    assert _name("pitch", lab["pitch"][12]) == "mid" and _name("variant", lab["variant"][12]) == "rising"
    assert _name("loudness", lab["loudness"][3]) == "loud" and _name("loudness", lab["loudness"][12]) == "quiet"
    assert _name("variant", lab["variant"][20]) == "white" and _name("length", lab["length"][20]) == "long"
    assert _name("length", lab["length"][12]) == "short"
    assert _name("pitch", lab["pitch"][20]) is None and _name("pitch", lab["pitch"][0]) is None
    assert [c for c in range(64) if lab["onset"][c] == 1] == [1, 11, 17, 26]
    assert [lab["clicks"][c].item() for c in (26, 28, 29)] == [1, 1, 1]
    sweeps = [_name("sweep", v) for v in lab["sweep"].tolist()]
    assert sweeps[1:8] == ["steady"] * 7 and set(sweeps[11:14]) == {"rising"}  # tone vs chirp on its own
    assert sweeps[0] is None and set(sweeps[17:23]) == {None}  # silence and noise: not applicable
    assert lab["clicks"][20] == IGNORE


def test_two_clicks_in_one_column_are_counted():
    scene = {"duration": 2.0, "sample_rate": 16000, "events": [
        synth._ev("clicks", 0.5, 0.124, "loud", n_clicks=2, interval=0.12)]}
    lab = column_labels(scene)
    cols = [c for c in range(64) if LABELS["kind"][lab["kind"][c]] == "clicks"]
    assert cols == [3] and lab["clicks"][3] == 2  # 0.5 and 0.62 s both fall in column 3


def test_pretraining_teaches_the_column_labels(tmp_path):
    synth.generate(tmp_path, n_train=48, n_test=16, seed=3, n_qa=1)
    cfg = AudioEncoderConfig(embed_dim=32, num_heads=2, specific_depth=1, unified_depth=1, tap_j=0, tap_k=0)
    torch.manual_seed(0)
    encoder = CavMaeAudioEncoder(cfg)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    report = pretrain_encoder(encoder, tmp_path, steps=60, batch=8, lr=3e-3, log_every=0)
    assert report["test_after"]["kind"] > report["test_before"]["kind"] + 0.2
    assert report["test_after"]["onset"] > 0.8
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert "patch_embed_a.proj.weight" in changed and "blocks_u.0.mlp.fc2.weight" in changed
    assert set(report["test_after"]) == set(LABELS) == set(report["labels"])


def test_pretraining_on_a_subset_of_labels(tmp_path):
    synth.generate(tmp_path, n_train=8, n_test=4, seed=4, n_qa=1)
    cfg = AudioEncoderConfig(embed_dim=32, num_heads=2, specific_depth=1, unified_depth=1, tap_j=0, tap_k=0)
    encoder = CavMaeAudioEncoder(cfg)
    report = pretrain_encoder(encoder, tmp_path, steps=2, batch=4, log_every=0, labels=["kind", "sweep"])
    assert set(report["test_after"]) == {"kind", "sweep"} and report["labels"] == ["kind", "sweep"]
    with pytest.raises(ValueError, match="unknown column labels.*'swept'"):
        pretrain_encoder(encoder, tmp_path, steps=1, labels=["kind", "swept"])
