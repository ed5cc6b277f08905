"""Checkpoint loading against the reference's manifests, strict key accounting, convert."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from safetensors.torch import save_file

from fusionaudio.gama import GamaConfig, GamaForCausalLM, load_model
from fusionaudio.gama.keymap import local_to_reference, reference_to_local
from fusionaudio.gama.loading import CheckpointError, load_finetuned, save_local
from fusionaudio.loading.weights import load_state_file
from fusionaudio.gama.tiny import reference_finetuned_state, reference_state_dict, train_tokenizer, write_reference_config

from conftest import reference_dir

TRAINED = ("lora", "audio", "qformer", "Qformer", "query_tokens")


def _manifest(name: str) -> dict:
    path = reference_dir() / name
    if not path.is_file():
        pytest.skip(f"reference manifest not found: {path}")
    return json.loads(path.read_text())


def _tagged(entries, offset: float) -> dict[str, torch.Tensor]:
    """One tensor per manifest entry, each filled with a value unique to it."""
    out = {}
    for i, e in enumerate(entries):
        dtype = torch.int64 if e["dtype"] == "int64" else torch.float32
        out[e["name"]] = torch.full(e["shape"], (i + offset) if dtype == torch.int64 else (i + offset) * 1e-3, dtype=dtype)
    return out


def _meta_model(llm: dict, lora: bool) -> GamaForCausalLM:
    cfg = GamaConfig.from_llama_config(llm)
    with torch.device("meta"):
        model = GamaForCausalLM(cfg)
        if lora:
            model.enable_lora()
    return model


@pytest.mark.parametrize("manifest,peft", [("manifest_base_7b.json", False), ("manifest_peft_7b.json", True),
                                           ("manifest_base.json", False), ("manifest_peft.json", True)])
def test_key_map_covers_manifest_exactly(manifest, peft):
    """Every reference key maps to a parameter of the same shape or is known-unused, and
    every parameter is covered (checked on the meta device, so the 7B set is cheap)."""
    m = _manifest(manifest)
    llm = m["config"] or _manifest("manifest_base_7b.json" if "7b" in manifest else "manifest_base.json")["config"]
    model = _meta_model(llm, lora=peft)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    seen, unused = {}, 0
    for e in m["entries"]:
        local = reference_to_local(e["name"])
        if local is None:
            unused += 1
            continue
        if local not in expected and local.endswith(".weight"):
            local = local[: -len("weight")] + "base_layer.weight"
        assert local in expected, e["name"]
        assert expected[local] == tuple(e["shape"]), e["name"]
        assert local not in seen, f"{e['name']} and {seen.get(local)} map to the same parameter"
        seen[local] = e["name"]
    assert set(seen) == set(expected)
    assert unused > 0
    # and the inverse map returns the reference names
    for local, ref in seen.items():
        assert local_to_reference(local, peft=peft) == ref


def test_manifest_base_and_finetuned_load_into_the_right_parameters(tmp_path, caplog):
    """Random weights under exactly the manifest's names and shapes: every tensor lands in
    its parameter, and the fine-tuned checkpoint's values win over the base directory's."""
    base = _manifest("manifest_base.json")
    peft = _manifest("manifest_peft.json")
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    base_state = _tagged(base["entries"], offset=1.0)
    save_file(base_state, str(base_dir / "model.safetensors"))
    (base_dir / "config.json").write_text(json.dumps(base["config"]))  # plain Llama fields only
    train_tokenizer(base_dir, vocab_size=base["config"]["vocab_size"])
    ft_entries = [e for e in peft["entries"] if any(s in e["name"] for s in TRAINED)]
    ft_state = _tagged(ft_entries, offset=10_000.0)
    torch.save(ft_state, tmp_path / "finetuned.pth")
    del base_state

    with caplog.at_level(logging.INFO, logger="fusionaudio.load"):
        model, tok = load_model(base_dir, tmp_path / "finetuned.pth")
    assert "known-unused" in caplog.text
    assert model.config.name == "gama-llama2-7b" and model.config.audio.specific_depth == 11
    params = dict(model.named_parameters())
    checked = 0
    for name, value in ft_state.items():
        local = reference_to_local(name)
        if local is None:
            continue
        assert torch.equal(params[local], value), name
        checked += 1
    base_values = _tagged(base["entries"], offset=1.0)
    for name, value in base_values.items():
        local = reference_to_local(name)
        if local is None or any(s in name for s in TRAINED):
            continue
        local = local if local in params else local.replace(".weight", ".base_layer.weight")
        assert torch.equal(params[local], value), name
        checked += 1
    assert checked == len(params)


def _tiny_reference_dir(tmp_path, weights="bin"):
    from fusionaudio.gama.tiny import make_reference_base_dir

    return make_reference_base_dir(tmp_path / "tiny", "tiny", seed=3, weights=weights)


def test_peft_adapter_naming_and_values_win(tiny_base_dir, tmp_path):
    model, _ = load_model(tiny_base_dir)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or not n.startswith("llm."):
                p.add_(torch.randn_like(p))
    for naming in ("default", "peft"):
        path = tmp_path / f"ckpt_{naming}.bin"
        torch.save(reference_finetuned_state(model, lora_naming=naming), path)
        loaded, _ = load_model(tiny_base_dir, path)
        for (n, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
            assert torch.equal(a, b), (naming, n)


def test_partial_lora_is_an_error(tiny_base_dir, tmp_path):
    model, _ = load_model(tiny_base_dir)
    state = reference_finetuned_state(model)
    dropped = sorted(k for k in state if "lora_A" in k)[0]
    del state[dropped]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial\.pth.*1 missing key.*lora_A"):
        load_model(tiny_base_dir, tmp_path / "partial.pth")


def _with_lora(base_dir, r=8, alpha=16, targets=("q_proj", "v_proj")):
    """A model on ``base_dir`` with random LoRA of the given shape (audio side as in the base)."""
    from fusionaudio.gama.config import LoraSettings
    from fusionaudio.gama.loading import load_base

    model = load_base(base_dir, lora=False)
    model.enable_lora(LoraSettings(r=r, alpha=alpha, dropout=0.0, target_modules=list(targets)))
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_" in n:
                p.normal_(0, 0.3)
    return model.eval()


def _same_logits(a, b, tok):
    ids = tok(["### Instruction:\nHi  there\n\n### Response:\n"], return_tensors="pt").input_ids
    fb = torch.randn(1, 1024, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(ids, fb).logits, b(ids, fb).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("suffix", [".bin", ".pth", ".safetensors"])
def test_lora_only_files_load_on_the_union_with_the_base(tiny_base_dir, tmp_path, suffix):
    """Only the LoRA tensors in the file (peft's or the reference's naming): the audio side comes
    from the base directory; nothing is reported missing."""
    model = _with_lora(tiny_base_dir)
    for naming in ("default", "peft"):
        state = {k: v for k, v in reference_finetuned_state(model, lora_naming=naming).items() if ".lora_" in k}
        assert state and all(".lora_" in k for k in state)
        path = tmp_path / f"lora_only_{naming}{suffix}"
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        loaded, tok = load_model(tiny_base_dir, path)
        _same_logits(loaded, model, tok)


@pytest.mark.parametrize("weights", ["adapter_model.safetensors", "adapter_model.bin"])
def test_peft_adapter_directory_reads_its_config(tiny_base_dir, tmp_path, weights):
    model = _with_lora(tiny_base_dir, r=4, alpha=32)
    d = tmp_path / "adapter"
    d.mkdir()
    state = {k: v for k, v in reference_finetuned_state(model, lora_naming="peft").items() if ".lora_" in k}
    save_file(state, str(d / weights)) if weights.endswith(".safetensors") else torch.save(state, d / weights)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 32, "lora_dropout": 0.05, "bias": "none",
              "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM"}
    (d / "adapter_config.json").write_text(json.dumps(config))
    loaded, tok = load_model(tiny_base_dir, d)
    assert (loaded.config.lora.r, loaded.config.lora.alpha, loaded.config.lora.dropout) == (4, 32, 0.05)
    _same_logits(loaded, model, tok)
    for bad, message in (({"r": 8}, r"rank \[4\] but the config says r=8"),
                         ({"target_modules": ["q_proj", "k_proj", "v_proj"]}, r"target \['q_proj', 'v_proj'\] but"),
                         ({"use_dora": True}, "use_dora=true is not supported"),
                         ({"r": "four"}, "r must be a number")):
        (d / "adapter_config.json").write_text(json.dumps({**config, **bad}))
        with pytest.raises(CheckpointError, match=message) as err:
            load_model(tiny_base_dir, d)
        assert "adapter" in str(err.value)


def test_checkpoint_without_lora_runs_without_lora(tiny_base_dir, tmp_path):
    """GAMA's stage 1 trains the audio side only: the checkpoint has no LoRA, the model none either."""
    from fusionaudio.gama.loading import load_base

    ref = load_base(tiny_base_dir, lora=False).eval()
    with torch.no_grad():
        ref.query_tokens.add_(1.0)
    state = {k: v for k, v in reference_finetuned_state(ref).items() if ".lora_" not in k}
    torch.save(state, tmp_path / "stage1.pth")
    loaded, tok = load_model(tiny_base_dir, tmp_path / "stage1.pth")
    assert not any(".lora_" in n for n, _ in loaded.named_parameters())
    assert torch.equal(loaded.query_tokens, ref.query_tokens)
    _same_logits(loaded, ref, tok)


@pytest.mark.parametrize("lora", [None, {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["dummy"]}])
def test_own_checkpoint_without_lora_loads(tiny_base_dir, tmp_path, lora):
    """This project's training output for a no-LoRA run (lora null or target_modules ['dummy'])."""
    from fusionaudio.gama.loading import load_base

    ref = load_base(tiny_base_dir, lora=False).eval()
    with torch.no_grad():
        ref.query_tokens.mul_(2.0)
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    trained = {k: v.contiguous() for k, v in ref.state_dict().items() if k.startswith(("audio_", "query_tokens"))}
    save_file(trained, str(ckpt / "adapter_model.safetensors"))
    cfg = ref.config.to_dict()
    cfg["lora"] = lora
    (ckpt / "fusionaudio_config.json").write_text(json.dumps(cfg))
    loaded, tok = load_model(tiny_base_dir, ckpt)
    assert loaded.config.lora is None and not any(".lora_" in n for n, _ in loaded.named_parameters())
    _same_logits(loaded, ref, tok)


def test_unexpected_and_missing_and_misshaped_keys_are_listed(tmp_path):
    cfg = GamaConfig.from_name("tiny")
    model = GamaForCausalLM(cfg)
    state = reference_state_dict(model)
    for case in ("missing", "unexpected", "shape", "config size"):
        d = tmp_path / case.replace(" ", "_")
        d.mkdir()
        s = dict(state)
        if case == "missing":
            del s["model.audio_encoder.norm_a.weight"]
            pattern = r"missing key.*audio_encoder\.norm_a\.weight"
        elif case == "unexpected":
            s["model.some_new_module.weight"] = torch.zeros(2)
            pattern = r"unexpected key.*model\.some_new_module\.weight"
        elif case == "shape":
            s["model.audio_encoder.norm_a.weight"] = torch.zeros(31)
            pattern = r"shape mismatch.*audio_encoder\.norm_a\.weight"
        else:  # a size the config gives: the error names the config field
            s["model.query_tokens"] = torch.zeros(1, 31, 32)
            pattern = r"fusionaudio\.qformer\.num_query_tokens is 32 but .*query_tokens has shape \(1, 31, 32\)"
        save_file(s, str(d / "model.safetensors"))
        write_reference_config(cfg, d)
        train_tokenizer(d, vocab_size=cfg.llm["vocab_size"])
        with pytest.raises(CheckpointError, match=pattern):
            load_model(d)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_are_loaded_weights_only(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_state_file(path)
    assert "this must never run" not in capsys.readouterr().out


def test_missing_directory_and_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps(GamaConfig.from_name("tiny").llm))
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_model(tmp_path)
    train_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_model(tmp_path)


def test_convert_round_trip(tiny_base_dir, tmp_path):
    from fusionaudio.cli import main

    ref, tok = load_model(tiny_base_dir)
    assert main(["convert", "--base_model", str(tiny_base_dir), "--output", str(tmp_path / "conv")]) == 0
    conv, tok2 = load_model(tmp_path / "conv")
    ids = tok(["### Instruction:\nHi\n\n### Response:\n"], return_tensors="pt").input_ids
    fb = torch.randn(1, 1024, 128)
    with torch.no_grad():
        torch.testing.assert_close(conv(ids, fb).logits, ref(ids, fb).logits, atol=0, rtol=0)
    assert tok2("hello").input_ids == tok("hello").input_ids
    # our own layout also saves and reloads fine-tuned checkpoints under our names
    save_local(conv, None, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").is_file()


def test_safetensors_shards_and_bf16(tmp_path):
    d = _tiny_reference_dir(tmp_path, weights="safetensors")
    model, _ = load_model(d, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    out = model(torch.tensor([[1, 5, 9]]), torch.randn(1, 1024, 128))
    assert torch.isfinite(out.logits).all()


def test_legacy_pickle_format_loads(tmp_path):
    """Old (non-zip) torch.save files cannot be memory-mapped; they still load, weights only."""
    path = tmp_path / "old.bin"
    torch.save({"a": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_file(path)["a"], torch.arange(3.0))


def test_finetuned_config_sets_lora_shape_and_fusion(tiny_base_dir, tmp_path):
    """A checkpoint trained with other LoRA settings / aggregator fusion than its base loads
    with those settings (read from the fusionaudio_config.json beside it)."""
    from fusionaudio.gama.config import LoraSettings
    from fusionaudio.gama.loading import load_base

    model = load_base(tiny_base_dir, lora=False)
    model.config.aggregator.fusion = "cross_attention"
    for layer in (model.audio_aggregator_layer_1, model.audio_aggregator_layer_2):
        layer.fusion = "cross_attention"
    model.enable_lora(LoraSettings(r=4, alpha=32, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    trained = {k: v.contiguous() for k, v in model.state_dict().items() if ".lora_" in k or k.startswith("audio_")}
    save_file(trained, str(ckpt / "adapter_model.safetensors"))
    model.config.save(ckpt / "fusionaudio_config.json")
    loaded, tok = load_model(tiny_base_dir, ckpt)
    assert loaded.config.lora.r == 4 and loaded.config.aggregator.fusion == "cross_attention"
    ids = tok(["### Instruction:\nHi\n\n### Response:\n"], return_tensors="pt").input_ids
    fb = torch.randn(1, 1024, 128)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, fb).logits, model(ids, fb).logits, atol=0, rtol=0)


def test_lora_injected_after_load_base_still_counts_the_base(tiny_base_dir, tmp_path):
    """Training builds load_base(lora=False) + enable_lora, then loads a checkpoint on top."""
    from fusionaudio.gama.loading import load_base

    model = _with_lora(tiny_base_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if ".lora_" in k}
    save_file(state, str(tmp_path / "lora.safetensors"))
    again = load_base(tiny_base_dir, lora=False)
    again.enable_lora(model.config.lora)
    assert sorted(load_finetuned(again, tmp_path / "lora.safetensors")) == sorted(state)
