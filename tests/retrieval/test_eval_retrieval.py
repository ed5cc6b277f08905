"""Our retrieval metrics by hand, batching, and a tiny random CLAP end to end (evaluate + fine-tune); the WavCaps
protocol is tested in test_retrieval_*.py."""


import json
import random
import re
import sys

import numpy as np
import pytest

from fusionaudio.retrieval import evaluate as ret_eval
from fusionaudio.retrieval import metrics as ret_metrics
from fusionaudio.retrieval import pairs as ret_pairs
from fusionaudio.evaluate.records import EvalInputError


def test_metrics_on_3x3_by_hand():
    sim = np.array([[0.9, 0.1, 0.3],
                    [0.2, 0.4, 0.8],
                    [0.5, 0.6, 0.7]])
    m = ret_metrics.retrieval_metrics(sim, [0, 1, 2], ks=(1, 2, 5))
    # t2a ranks of the true audio: 1, 2, 1 ; a2t ranks of the true caption: 1, 2 (text2 > text1), 2 (text1 > text2)
    assert m["t2a_R@1"] == pytest.approx(2 / 3) and m["t2a_R@2"] == 1.0 and m["t2a_R@5"] == 1.0
    assert m["t2a_mAP@10"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert m["a2t_R@1"] == pytest.approx(1 / 3) and m["a2t_R@2"] == 1.0
    assert m["a2t_mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)


def test_several_captions_per_clip():
    # texts 0,1 -> audio 0 ; texts 2,3 -> audio 1
    sim = np.array([[0.9, 0.3], [0.1, 0.5], [0.8, 0.4], [0.2, 0.6]])
    m = ret_metrics.retrieval_metrics(sim, [0, 0, 1, 1], ks=(1,))
    # a2t audio 0 ranks texts 0(+) 2 3 1(+) -> AP (1 + 2/4)/2 ; audio 1 ranks 3(+) 1 2(+) 0 -> AP (1 + 2/3)/2
    assert m["a2t_mAP@10"] == pytest.approx((0.75 + 5 / 6) / 2)
    assert m["a2t_R@1"] == 1.0
    # t2a ranks of the true audio: text0 1, text1 2, text2 2, text3 1
    assert m["t2a_R@1"] == pytest.approx(2 / 4) and m["t2a_mAP@10"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert ret_metrics.retrieval_metrics(sim, [0, 0, 1, 1], map_k=1)["a2t_mAP@1"] == 1.0


def test_ties_rank_pessimistically_and_cutoff():
    m = ret_metrics.retrieval_metrics(np.zeros((3, 3)), [0, 1, 2])
    assert m["t2a_R@1"] == 0.0 and m["a2t_R@1"] == 0.0
    sim = -np.eye(12)[:, ::-1] - np.arange(12)[None, :] * 1e-3  # text 0's audio 0 ranks 1st..., text 11 ranks 12th
    rel = ret_metrics.ranked_relevance(sim[0], np.arange(12) == 11)
    assert list(rel).index(True) == 11 and ret_metrics.query_metrics(rel)["mAP@10"] == 0.0


def test_collect_pairs_and_missing_audio(tmp_path):
    recs = [{"audio_id": "a.wav", "output": "x"}, {"audio_id": "b.wav", "output": ["y", "z"]},
            {"audio_id": "a.wav", "output": "w"}]
    ids, caps, t2a = ret_pairs.collect_pairs(recs, "f.json")
    assert ids == ["a.wav", "b.wav"] and caps == ["x", "y", "z", "w"] and t2a == [0, 1, 1, 0]
    with pytest.raises(EvalInputError, match="audio_id 'a.wav' not found"):
        ret_pairs.resolve_audio_paths(ids, str(tmp_path), "f.json")
    (tmp_path / "a.wav").write_bytes(b"")
    assert ret_pairs.resolve_audio_paths(["a.wav"], "", str(tmp_path / "f.json")) == [str(tmp_path / "a.wav")]


def test_unique_audio_batches():
    from fusionaudio.retrieval.clap_train import unique_audio_batches

    pairs = [(f"clip{i % 5}", f"cap{i}") for i in range(23)]
    batches = unique_audio_batches(pairs, 4, random.Random(0))
    for b in batches:
        assert len({pairs[i][0] for i in b}) == len(b) <= 4
    covered = sorted(i for b in batches for i in b)
    assert len(covered) == len(set(covered)) and len(covered) >= 23 - 5  # only singleton batches dropped


def make_tiny_clap(path):
    """A random CLAP (hidden sizes 16-32, one layer per stage) with a byte-level BPE tokenizer, offline."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    torch.manual_seed(0)
    symbols = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[])
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                              fft_window_size=400, frequency_max=8000, truncation="rand_trunc", padding="repeatpad")
    cfg = ClapConfig(
        text_config=dict(vocab_size=len(symbols), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66, projection_dim=16),
        audio_config=dict(num_mel_bins=16, spec_size=64, window_size=4, patch_size=4, patch_stride=4, depths=[1, 1],
                          num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_dim=16),
        projection_dim=16)
    ClapModel(cfg).save_pretrained(path)
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("clap")
    model_dir = make_tiny_clap(root / "model")
    rng = np.random.default_rng(0)
    recs = []
    for k, sr in enumerate((16000, 22050, 16000)):
        t = np.arange(int(sr * (0.5 + 0.4 * k))) / sr
        sf.write(root / f"clip{k}.wav", (0.3 * np.sin(2 * np.pi * 300 * (k + 1) * t)
                                          + 0.01 * rng.standard_normal(t.size)).astype(np.float32), sr)
        recs.append({"audio_id": f"clip{k}.wav", "instruction": "Describe the audio.", "input": "",
                     "output": [f"tone number {k}", f"a beep of pitch {k}"]})
    (root / "caps.json").write_text(json.dumps(recs))
    return root, model_dir


def test_clap_dual_encoder_and_evaluate(tiny_setup):
    from fusionaudio.retrieval.clap import ClapDualEncoder

    root, model_dir = tiny_setup
    enc = ClapDualEncoder(model_dir, batch_size=2)
    text = enc.encode_text(["a dog", "rain on a roof", "x"])
    audio = enc.encode_audio([str(root / "clip0.wav"), np.zeros(8000, np.float32)])
    assert text.shape == (3, 16) and audio.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    res = ret_eval.evaluate_retrieval(str(root / "caps.json"), model_dir, str(root / "ret.json"))  # ids relative to it
    m = res["metrics"]
    assert res["meta"]["n_audios"] == 3 and res["meta"]["n_captions"] == 6
    assert set(m) == {f"{d}_{k}" for d in ("t2a", "a2t") for k in ("R@1", "R@5", "R@10", "mAP@10")}
    assert all(0 <= v <= 1 for v in m.values()) and m["t2a_R@5"] == 1.0
    assert (root / "ret.md").is_file()


def test_contrastive_finetune_cli(tiny_setup, tmp_path, monkeypatch, capsys):
    from fusionaudio.retrieval.cli import main

    root, model_dir = tiny_setup
    out = tmp_path / "ft"
    argv = ["fusionaudio.retrieval", "train", "--train_json", str(root / "caps.json"), "--model_dir", model_dir,
            "--output_dir", str(out), "--audio_root", str(root), "--epochs", "1", "--batch_size", "3",
            "--lr", "1e-3", "--val_json", str(root / "caps.json")]
    monkeypatch.setattr(sys, "argv", argv)
    assert main() == 0  # the CLI, in-process
    assert re.search(r'"n_steps": 2\b', capsys.readouterr().out)
    log = json.loads((out / "train_log.json").read_text())
    assert log["n_pairs"] == 6 and len(log["steps"]) == 2  # 2 rounds of 3 clips (2 captions per clip)
    assert all(np.isfinite(s["loss"]) for s in log["steps"]) and len(log["val"]) == 1
    assert (out / "config.json").is_file() and (out / "processor_config.json").is_file()
    from fusionaudio.retrieval.clap import ClapDualEncoder

    before = ClapDualEncoder(model_dir).encode_text(["tone number 1"])
    after = ClapDualEncoder(str(out)).encode_text(["tone number 1"])
    assert not np.allclose(before, after)  # the weights moved and were saved


def test_cli_evaluate_clap_by_default(tiny_setup, tmp_path, monkeypatch, capsys):
    from fusionaudio.retrieval.cli import main

    root, model_dir = tiny_setup
    out = tmp_path / "clap.ret.json"
    monkeypatch.setattr(sys, "argv", ["x", "evaluate", "--input", str(root / "caps.json"), "--model_dir", model_dir,
                                      "--output", str(out)])
    main()  # python -m fusionaudio.retrieval evaluate: --arch clap by default
    assert "t2a_R@1" in capsys.readouterr().out and json.loads(out.read_text())["meta"]["protocol"] == "dcase"
