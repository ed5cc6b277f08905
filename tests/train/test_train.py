"""Training (fusionaudio.train): trainable modes, masking, padding, loss, checkpoints, resume,
bad data. Tiny models, a handful of steps each, all on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio.gama.collate import IGNORE_INDEX, Example, collate, tokenize_record
from fusionaudio.gama.config import LoraSettings
from fusionaudio.gama.loading import load_model, load_tokenizer
from fusionaudio.train import (build_model, lora_settings, resolve_start, save_trained, set_trainable, train,
                               trainable_names)

FAST = dict(val_set_size=0, warmup_steps=0, save_steps=0, eval_steps=0, progress=False, cache_fbank=True,
            logging_steps=0, seed=0)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    """6 synthetic clips (30 records) plus 4 text-only records."""
    from fusionaudio.demo.scenes import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=6, n_test=0, seed=3)
    records = json.loads((out / "train.json").read_text())
    records += [{"audio_id": "empty", "instruction": f"Say the number {i}.", "input": "", "output": f"{i}."}
                for i in range(4)]
    (out / "mixed.json").write_text(json.dumps(records))
    return out


def _losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())}


# -- parameters -----------------------------------------------------------------------------
def _groups(names) -> set[str]:
    out = set()
    for n in names:
        if ".lora_" in n:
            out.add("lora")
        elif n.startswith("llm."):
            out.add("llm")
        else:
            out.add(n.split(".")[0])
    return out


def test_trainable_modes_select_reference_groups(tiny_base_dir):
    model, _ = build_model(tiny_base_dir, LoraSettings(), "cpu")
    agg = {"audio_aggregator_layer_1", "audio_aggregator_layer_2", "audio_proj_qformer", "audio_proj_audioenc"}
    expected = {
        "all": {"lora", "audio_encoder"} | agg,
        "proj": {"lora", "audio_proj_qformer", "audio_proj_audioenc"},
        "qformer": {"lora"} | agg,
        "qformer_all": {"lora", "audio_encoder", "qformer", "query_tokens", "qformer_proj_norm"} | agg,
        "full": {"lora", "llm", "audio_encoder", "qformer", "query_tokens", "qformer_proj_norm"} | agg,
        "full_frozen_encoder": {"lora", "llm", "qformer", "query_tokens", "qformer_proj_norm"} | agg,
    }
    for mode, groups in expected.items():
        assert _groups(trainable_names(model, mode)) == groups, mode
    set_trainable(model, "proj")
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(trainable_names(model, "proj"))
    assert all(".lora_" in n for n in trained if n.startswith("llm."))
    with pytest.raises(ValueError, match="trainable_params"):
        trainable_names(model, "everything")


# -- examples -------------------------------------------------------------------------------
def test_train_on_inputs_false_masks_the_prompt(tiny_base_dir):
    tok = load_tokenizer(tiny_base_dir)
    for rec in ({"instruction": "Describe the audio.", "input": "", "output": "A loud tone."},
                {"instruction": "What do you hear?", "input": "tone 1", "output": "There is a tone."}):
        ids, labels = tokenize_record(tok, rec, cutoff_len=256, train_on_inputs=False)
        full_ids, full_labels = tokenize_record(tok, rec, cutoff_len=256, train_on_inputs=True)
        assert ids == full_ids and full_labels == [IGNORE_INDEX] + ids[1:] and ids[-1] == tok.eos_token_id
        n = labels.count(IGNORE_INDEX)
        assert labels[:n] == [IGNORE_INDEX] * n and labels[n:] == ids[n:]
        assert "Response" in tok.decode(ids[:n]) and "Response" not in tok.decode(ids[n:])
        assert tok.decode(ids[n:], skip_special_tokens=True).strip() == rec["output"]
    ids, labels = tokenize_record(tok, rec, cutoff_len=8, train_on_inputs=False)
    assert len(ids) == len(labels) == 8 and set(labels) == {IGNORE_INDEX}  # truncated into the prompt


def test_padding_sides_give_the_same_loss(tiny_model):
    model, tok = tiny_model
    model.eval()
    rng = np.random.default_rng(0)
    examples = [Example(list(ids), [IGNORE_INDEX] + list(ids[1:]), None, i) for i, ids in
                enumerate([[1, *rng.integers(3, 500, 11), 2], [1, *rng.integers(3, 500, 4), 2]])]
    audio = torch.randn(2, 1024, 128)
    losses = {}
    for side in ("left", "right"):
        b = collate(examples, tok.pad_token_id, side)
        assert b["input_ids"].shape == (2, 16)  # padded to a multiple of 8
        assert b["attention_mask"].sum(1).tolist() == [13, 6]
        assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()
        with torch.no_grad():
            losses[side] = model(b["input_ids"], audio, b["attention_mask"], b["labels"]).loss.item()
    assert losses["left"] == pytest.approx(losses["right"], abs=1e-5)


# -- training ---------------------------------------------------------------------------------
def test_loss_falls(tiny_base_dir, synth_data, tmp_path):
    summary = train(base_model=str(tiny_base_dir), data_path=str(synth_data / "train.json"),
                    output_dir=str(tmp_path), batch_size=8, micro_batch_size=8, max_steps=12,
                    learning_rate=3e-3, trainable_params="full", **{**FAST, "val_set_size": 4, "eval_steps": 6})
    losses = list(_losses(tmp_path).values())
    assert len(losses) == 12 and summary["global_step"] == 12
    evals = {e["step"]: e["eval_loss"] for e in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
             if "eval_loss" in e}
    assert sorted(evals) == [6, 12] and evals[12] < evals[6] and summary["eval_loss"] == evals[12]
    assert np.mean(losses[-3:]) < losses[0] - 1.0, losses
    assert (tmp_path / "loss_curve.png").stat().st_size > 0


def test_resume_reproduces_the_uninterrupted_run(tiny_base_dir, synth_data, tmp_path):
    args = dict(base_model=str(tiny_base_dir), data_path=str(synth_data / "mixed.json"), batch_size=8,
                micro_batch_size=4, max_steps=4, learning_rate=2e-3, lora_dropout=0.1, **{**FAST, "save_steps": 2})
    train(output_dir=str(tmp_path / "full"), **args)
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert {p.name for p in ckpt.iterdir()} >= {"adapter_model.safetensors", "fusionaudio_config.json",
                                                "training_args.json", "trainer_state.json", "optimizer.bin",
                                                "scheduler.bin", "random_states_0.pkl"}
    assert not list(ckpt.glob("model*.safetensors"))  # the engine's full model copy is left out
    train(output_dir=str(tmp_path / "resumed"), resume_from_checkpoint=str(ckpt), **args)
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(full[step], abs=1e-6)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("full", "resumed"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the checkpoint also starts a new run: its base directory is recorded beside it
    assert resolve_start(str(ckpt)) == (Path(tiny_base_dir).resolve(), ckpt)
    assert resolve_start(str(ckpt / "adapter_model.safetensors"))[0] == Path(tiny_base_dir).resolve()


def test_checkpoint_round_trip_through_load_model(tiny_base_dir, tmp_path):
    torch.manual_seed(0)
    model, tok = build_model(tiny_base_dir, LoraSettings(), "cpu")
    names = set_trainable(model, "qformer_all")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_trained(model, names, tmp_path / "ckpt", {"base_dir": str(tiny_base_dir)})
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "ckpt" / "adapter_model.safetensors"))) == set(names)
    loaded, _ = load_model(tiny_base_dir, tmp_path / "ckpt")
    model.eval()
    ids, audio = torch.randint(3, 500, (2, 9)), torch.randn(2, 1024, 128)
    with torch.no_grad():
        assert torch.equal(model(ids, audio).logits, loaded(ids, audio).logits)


# -- bad data -------------------------------------------------------------------------------
def test_bad_record_stops_training_with_a_report(tiny_base_dir, synth_data, tmp_path):
    from fusionaudio.records import RecordError

    records = [{**r, "audio_id": str(synth_data / r["audio_id"])}
               for r in json.loads((synth_data / "train.json").read_text())[:8]]
    records.insert(3, {**records[0], "audio_id": str(tmp_path / "missing.wav")})
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    args = dict(base_model=str(tiny_base_dir), data_path=str(data), batch_size=4, micro_batch_size=4,
                max_steps=1, **FAST)
    with pytest.raises(RecordError, match="missing.wav"):
        train(output_dir=str(tmp_path / "stop"), **args)
    assert "missing.wav" in (tmp_path / "stop" / "data_validation_report.txt").read_text()
    assert not (tmp_path / "stop" / "adapter_model.safetensors").exists()

    summary = train(output_dir=str(tmp_path / "skip"), skip_bad_records=True, **args)
    assert summary["global_step"] == 1
    report = json.loads((tmp_path / "skip" / "data_validation_report.json").read_text())
    assert [b["index"] for b in report["bad"]] == [3] and "missing.wav" in report["bad"][0]["reason"]


def test_audio_that_fails_to_decode_is_never_replaced(tiny_base_dir, synth_data, tmp_path):
    from fusionaudio.audio import AudioError

    sf.write(str(tmp_path / "short.wav"), np.zeros(100, dtype=np.float32), 16000)  # < one 25 ms frame
    good = str((synth_data / "audio" / "clip_00000.wav").resolve())
    records = [{"audio_id": a, "instruction": "Describe the audio.", "input": "", "output": "A sound."}
               for a in [str(tmp_path / "short.wav")] * 4 + [good] * 4]
    data = tmp_path / "short.json"
    data.write_text(json.dumps(records))
    args = dict(base_model=str(tiny_base_dir), data_path=str(data), batch_size=8, micro_batch_size=8,
                max_steps=1, **FAST)
    with pytest.raises(AudioError, match="short.wav"):
        train(output_dir=str(tmp_path / "stop"), **args)
    train(output_dir=str(tmp_path / "skip"), skip_bad_records=True, **args)
    assert "short.wav" in (tmp_path / "skip" / "skipped_audio.txt").read_text()


def test_lora_target_spellings():
    assert all(lora_settings(8, 16, 0.05, v) is None for v in ("['dummy']", "[dummy]", "none", "[]", []))
    for v in ("[q_proj,v_proj]", "['q_proj', 'v_proj']", ("q_proj", "v_proj")):
        s = lora_settings(8, 16, 0.1, v)
        assert (s.r, s.alpha, s.dropout, s.target_modules) == (8, 16, 0.1, ["q_proj", "v_proj"])
