"""The WavCaps ASE model: strict loading from the released layout, front end, geometry, text path."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionaudio.retrieval import load_ase
from fusionaudio.retrieval.ase import AseConfig, AseModel, text_preprocess
from fusionaudio.retrieval.keymap import CheckpointMismatch
from fusionaudio.retrieval.released_layout import released_keys, to_released
from fusionaudio.retrieval.tiny_ase import make_tiny_ase

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "reference" / "wavcaps_manifest.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ckpt, bert = make_tiny_ase(tmp_path_factory.mktemp("ase"))
    return ckpt, bert, load_ase(ckpt, bert)


def waves(n=2, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(32000 * seconds)) / 32000
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * (k + 1) * t) + 0.05 * rng.standard_normal(t.size)
                     for k in range(n)]).astype(np.float32)


def test_full_size_layout_is_the_released_one():
    """The default config generates exactly the 407 released names, shapes and dtypes (manifest)."""
    from transformers import BertConfig

    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = AseModel(AseConfig(), BertConfig())
    assert released_keys(model) == [e["key"] for e in manifest]
    sd = to_released(model)
    for e in manifest:
        assert list(sd[e["key"]].shape) == e["shape"] and str(sd[e["key"]].dtype) == "torch." + e["dtype"], e["key"]
    # the original's count 143,890,904 = ours + its frozen STFT/mel kernels (ours are buffers) + unused tscam/head
    n_ours = sum(p.numel() for p in model.parameters())
    assert n_ours + 2 * 513 * 1024 + 513 * 64 + (527 * 768 * 6 + 527) + (527 * 527 + 527) == 143_890_904


def test_load_path_and_state_dict_agree(tiny):
    ckpt, bert, model = tiny
    cp = torch.load(ckpt, weights_only=False)
    assert model.config.depths == (2, 2, 2) and model.config.spec_size == 64 and model.config.max_samples == 81919
    again = load_ase(cp["model"], bert)
    w = waves()
    a, b = model.encode_audio(w), again.encode_audio(w)
    assert a.shape == (2, 16) and torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    torch.testing.assert_close(a, b)
    tok = model.tokenize(["A dog barks.", "rain falls on the roof"])
    t = model.encode_text(tok["input_ids"], tok["attention_mask"])
    assert t.shape == (2, 16) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert set(model.load_report["unused"]) == {f"audio_encoder.audio_enc.{m}.{p}" for m in ("tscam_conv", "head")
                                                 for p in ("weight", "bias")}
    # round trip: the released layout written back from the loaded model reloads to the same embeddings
    torch.testing.assert_close(load_ase(to_released(model), bert).encode_audio(w), a)


def test_weights_are_actually_used(tiny):
    ckpt, bert, model = tiny
    sd = dict(torch.load(ckpt, weights_only=False)["model"])
    w = waves()
    for key in ("audio_encoder.audio_enc.layers.1.blocks.1.attn.qkv.weight", "audio_encoder.audio_enc.bn0.running_mean",
                "audio_encoder.audio_enc.audio_feats_extractor.log_trans.melW"):
        changed = dict(sd, **{key: sd[key] * 1.5 + 0.1})
        assert not torch.allclose(load_ase(changed, bert).encode_audio(w), model.encode_audio(w), atol=1e-4), key
    tscam = dict(sd, **{"audio_encoder.audio_enc.tscam_conv.weight": torch.zeros_like(
        sd["audio_encoder.audio_enc.tscam_conv.weight"])})
    torch.testing.assert_close(load_ase(tscam, bert).encode_audio(w), model.encode_audio(w))  # unused (Q4)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"audio_encoder.audio_enc.extra.weight": torch.zeros(1)}), "unexpected key.*extra.weight"),
    (lambda sd: sd.pop("text_proj.2.bias"), "missing key.*text_proj.2.bias"),
    (lambda sd: sd.update({"audio_proj.0.bias": torch.zeros(3)}), "shape mismatch: audio_proj.0.bias"),
    (lambda sd: sd.update({"audio_encoder.audio_enc.layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16)}),
     "differ.*layers.0.blocks.1.attn_mask"),
    (lambda sd: sd.update({"audio_encoder.audio_enc.layers.2.blocks.1.attn_mask": torch.zeros(1, 16, 16)}),
     "differ.*layers.2.blocks.1.attn_mask"),  # the last stage (grid = window) has no shift, hence no mask
    (lambda sd: sd.pop("audio_encoder.audio_enc.layers.0.blocks.0.attn.qkv.bias"), "missing key.*blocks.0.attention"),
])
def test_strict_loading_names_keys(tiny, edit, message):
    ckpt, bert, _ = tiny
    sd = dict(torch.load(ckpt, weights_only=False)["model"])
    edit(sd)
    with pytest.raises(CheckpointMismatch, match=message):
        load_ase(sd, bert)


def test_optional_position_ids_and_config_checks(tiny, tmp_path):
    ckpt, bert, model = tiny
    cp = torch.load(ckpt, weights_only=False)
    sd = dict(cp["model"])
    sd.pop("text_encoder.text_encoder.embeddings.position_ids")  # absent under newer transformers (Q7)
    load_ase(sd, bert)
    bad = dict(cp, config={**cp["config"], "audio_encoder_args": {"type": "cnn", "model": "Cnn14"}})
    torch.save(bad, tmp_path / "cnn.pt")
    with pytest.raises(CheckpointMismatch, match="HTS-AT"):
        load_ase(tmp_path / "cnn.pt", bert)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_ase(ckpt, tmp_path)


def test_logmel_matches_an_independent_stft(tiny):
    """conv-DFT log-mel == torch.stft (periodic Hann, centre, reflect) @ librosa slaney mel, in dB."""
    import librosa

    _, _, model = tiny
    w = waves(1, 0.7)
    ours = model.logmel(w)[0, 0].numpy()
    spec = torch.stft(torch.tensor(w[0], dtype=torch.float64), 1024, 320, window=torch.hann_window(1024, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=16, fmin=50, fmax=14000) @ spec.numpy()
    ref = 10 * np.log10(np.maximum(mel, 1e-10)).T
    assert ours.shape == (1 + w.shape[1] // 320, 16)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_swin_image_layout_and_stretch(tiny):
    """image[b, 0, c*F + mel, t] = x[b, 0, c*T/4 + t, mel] after a bicubic stretch (not padding) to T frames."""
    _, _, model = tiny
    enc = model.audio_encoder
    x = torch.randn(1, 1, 256, 16)
    img = enc.reshape_mel2img(x)
    assert img.shape == (1, 1, 64, 64)
    for c, mel, t in [(0, 0, 0), (1, 3, 5), (3, 15, 63), (2, 7, 40)]:
        assert img[0, 0, c * 16 + mel, t] == x[0, 0, c * 64 + t, mel]
    short = torch.randn(1, 1, 100, 16)
    stretched = enc.reshape_mel2img(short)
    assert stretched[0, 0, 0, 0] == short[0, 0, 0, 0] and stretched[0, 0, 63, 63] == short[0, 0, -1, 15]


def test_swin_input_is_bn0_over_mel_bins_then_stretch(tiny):
    _, _, model = tiny
    w = waves(1, 0.5)
    mel = model.logmel(w)  # [1, 1, 51, 16]
    bn = model.audio_encoder.batch_norm
    by_hand = (mel - bn.running_mean) / torch.sqrt(bn.running_var + 1e-5) * bn.weight + bn.bias
    stretched = torch.nn.functional.interpolate(by_hand, (256, 16), mode="bicubic", align_corners=True)
    img = model.swin_input(w)
    assert img.shape == (1, 1, 64, 64)
    torch.testing.assert_close(img[0, 0, 16:32, :], stretched[0, 0, 64:128, :].T)  # chunk 1 of 4


def test_length_limit_and_batch_padding(tiny):
    _, _, model = tiny
    limit = model.config.max_samples
    model.encode_audio(np.zeros((1, limit), np.float32) + 0.01)
    with pytest.raises(ValueError, match="exceeds the model's 256 frames"):
        model.encode_audio(np.zeros((1, limit + 1), np.float32))
    w = waves(1, 1.0)
    alone = model.encode_audio(w)
    padded = model.encode_audio(np.pad(w, ((0, 0), (0, 32000))))
    assert not torch.allclose(alone, padded, atol=1e-4)  # Q3: the embedding depends on the batch's padding


def test_text_preprocess_and_tokenize(tiny):
    _, _, model = tiny
    # one non-overlapping .replace pass: 3 spaces become 2, as in the original
    assert text_preprocess('A dog barks , loudly. (Rain)!"') == "a dog barks loudly  rain  "
    tok = model.tokenize(["a dog", "the car engine is loud and a bird sings on the roof " * 4])
    assert tok["input_ids"].shape == (2, 30)  # truncation to 30, padding to the longest
    assert tok["input_ids"][0, 0] == model.tokenizer.cls_token_id and tok["attention_mask"][0].sum() == 4
    one = model.encode_captions(["a dog"])
    torch.testing.assert_close(one, model.encode_text(tok["input_ids"][:1], tok["attention_mask"][:1]), atol=1e-6,
                               rtol=0)  # [CLS] does not see the padding


def test_checkpoint_reading_is_weights_only(tiny, tmp_path):
    import argparse
    import io

    from fusionaudio.retrieval.ase import read_checkpoint

    ckpt, _, _ = tiny
    cp = torch.load(ckpt, weights_only=False)
    buf = io.BytesIO()  # a numpy-1 era file: its scalars are pickled as numpy.core.multiarray.scalar
    torch.save({"model": {"temp": cp["model"]["temp"]}, "epoch": np.int64(7)}, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "np1.pt").write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    sd, cfg = read_checkpoint(tmp_path / "np1.pt")
    assert list(sd) == ["temp"] and cfg is None
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pt")
    with pytest.raises(RuntimeError, match="weights_only"):
        read_checkpoint(tmp_path / "pickled.pt")
