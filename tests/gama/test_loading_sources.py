"""What ``load_model`` / ``FusionAudioInference`` accept as a model: a fine-tuned checkpoint alone (its base
from ``training_args.json``), nothing (a clear error), ``cuda`` without CUDA (the CPU), and a base whose
embedding has more rows than its tokenizer has tokens (a padded vocabulary: loads, extra ids never emitted)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from fusionaudio.errors import CheckpointError
from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.inference import FusionAudioInference, Request
from fusionaudio.gama.loading import load_model
from fusionaudio.gama.tiny import make_reference_base_dir, train_tokenizer
from fusionaudio.gama.tokenizer import TokenizerError


@pytest.fixture(scope="module")
def finetuned(tiny_base_dir, tmp_path_factory):
    """A training output folder (adapter_model.safetensors, fusionaudio_config.json, training_args.json)."""
    from fusionaudio.train.checkpoints import save_trained

    model, _ = load_model(tiny_base_dir)
    torch.manual_seed(3)
    names = [n for n, _ in model.named_parameters() if ".lora_" in n]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3)
    out = tmp_path_factory.mktemp("ft") / "checkpoint-2"
    save_trained(model, names, out, {"base_dir": str(tiny_base_dir.resolve())})
    return out, model


def test_a_checkpoint_alone_loads_on_its_recorded_base(finetuned, tiny_base_dir):
    ckpt, trained = finetuned
    for base, model_path in ((None, ckpt), (ckpt, None)):  # --model_path CKPT, or the checkpoint as the base
        model, _ = load_model(base, model_path)
        ours = dict(model.named_parameters())
        for n, p in trained.named_parameters():
            assert torch.equal(ours[n], p), n
    engine = FusionAudioInference(None, ckpt)
    assert engine.base_model_path == str(tiny_base_dir.resolve()) and engine.model_label is None


def test_a_checkpoint_without_its_base_is_a_clear_error(finetuned, tmp_path):
    ckpt, _ = finetuned
    alone = tmp_path / "copied"
    shutil.copytree(ckpt, alone)
    (alone / "training_args.json").unlink()
    with pytest.raises(CheckpointError, match=r"no training_args\.json beside the checkpoint records one; pass "
                                              r"--base_model DIR"):
        load_model(None, alone)
    (alone / "training_args.json").write_text(json.dumps({"base_dir": str(tmp_path / "gone")}))
    with pytest.raises(CheckpointError, match=r"was fine-tuned from .*gone \(recorded in .*\), which is not there"):
        FusionAudioInference(None, alone)


def test_no_model_at_all_is_a_clear_error():
    with pytest.raises(CheckpointError, match="no model given: pass a base model directory"):
        load_model(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_without_cuda_falls_back_to_the_cpu(tiny_base_dir, caplog):
    with caplog.at_level(logging.WARNING):
        model, _ = load_model(tiny_base_dir, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    assert "CUDA is not available, using CPU instead of cuda" in caplog.text


@pytest.fixture(scope="module")
def padded_base(tmp_path_factory):
    """A base whose embedding has 64 rows more than its tokenizer has tokens (pad_to_multiple_of)."""
    config = GamaConfig.from_name("tiny")
    tokens = int(config.llm["vocab_size"])
    config.llm["vocab_size"] = tokens + 64
    out = make_reference_base_dir(tmp_path_factory.mktemp("padded"), config, seed=0, llm_init_std=0.2)
    train_tokenizer(out, vocab_size=tokens)  # the tokenizer keeps its own size
    return out, tokens


def test_a_padded_vocabulary_loads_and_its_extra_ids_are_never_generated(padded_base, monkeypatch):
    base, tokens = padded_base
    engine = FusionAudioInference(base, dtype="float32", device="cpu")
    assert len(engine.tokenizer) == tokens and engine.model.llm.get_input_embeddings().weight.shape[0] == tokens + 64
    with torch.no_grad():  # make the padding rows win every step unless they are masked
        head = engine.model.llm.get_output_embeddings().weight
        head[:tokens] = 0.0
        head[tokens:] = torch.randn_like(head[tokens:]) * 50
    emitted = []
    decode = engine.tokenizer.batch_decode
    monkeypatch.setattr(engine.tokenizer, "batch_decode",
                        lambda ids, **kw: emitted.append(ids.clone()) or decode(ids.clamp(max=tokens - 1), **kw))
    engine.generate([Request("Describe the audio.")], do_sample=False, max_new_tokens=5)
    assert int(emitted[-1].max()) < tokens
    monkeypatch.setattr(engine, "unused_ids", [])  # the control: unmasked, the padding ids do come out
    engine.generate([Request("Describe the audio.")], do_sample=False, max_new_tokens=5)
    assert int(emitted[-1].max()) >= tokens


def test_token_ids_beyond_the_embedding_are_refused(padded_base, tmp_path):
    base, tokens = padded_base
    small = tmp_path / "small"
    shutil.copytree(base, small)
    train_tokenizer(small, vocab_size=tokens + 65)  # one token more than the embedding has rows
    with pytest.raises(TokenizerError, match=f"has {tokens + 65} tokens but the model's embedding has only "
                                             f"{tokens + 64} rows"):
        load_model(small)
