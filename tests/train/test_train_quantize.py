"""QLoRA for GAMA (``python -m fusionaudio.train --quantize int8|nf4``): the Llama frozen in 8 / 4 bits, LoRA and
the trained audio modules in fp32, gradients through the quantized layers, checkpoints of the trained tensors
only that load over the quantized or the full base, and merges into the full-precision base."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from fusionaudio.errors import UsageError
from fusionaudio.gama.config import LoraSettings
from fusionaudio.gama.loading import load_model
from fusionaudio.gama.tiny import make_reference_base_dir
from fusionaudio.loading.quantize import pack_for_cpu_inference
from fusionaudio.train import build_model, enable_checkpointing, save_trained, set_trainable, train

METHODS = ("int8", "nf4")
FAST = dict(val_set_size=0, warmup_steps=0, save_steps=0, eval_steps=0, progress=False, cache_fbank=True,
            logging_steps=0, seed=0)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """Tiny reference base with the Llama's own initialisation (gradients of a sane size)."""
    return make_reference_base_dir(tmp_path_factory.mktemp("qlora_base"), "tiny", seed=0)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from fusionaudio.demo.scenes import generate

    out = tmp_path_factory.mktemp("qlora_synth")
    generate(out, n_train=4, n_test=0, seed=3)
    return out / "train.json"


def _batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 500, (2, 10), generator=gen)
    return ids, torch.randn(2, 1024, 128, generator=gen), ids.clone()


def _lora_grads(model, lora_from=None):
    """LoRA-B gradients of one training forward/backward (``lora_from``: copy its LoRA values first)."""
    if lora_from is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, p in lora_from.named_parameters():
                if ".lora_" in name:
                    params[name].copy_(p)
    ids, audio, labels = _batch()
    model.train()
    model.zero_grad()
    torch.manual_seed(0)  # the same dropout (Q-Former, aggregator) in both models
    model(ids, audio_input=audio, labels=labels).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}


@pytest.mark.parametrize("method", METHODS)
def test_lora_gradients_flow_through_the_quantized_llama(base_dir, method):
    """Every LoRA-B gets a gradient (the first layer's comes back through every quantized layer above it),
    close in direction to full precision's (cosine measured here: int8 >= 0.99990, nf4 >= 0.984; asserted
    0.999 and 0.95: NF4 weights differ by up to 15% of their block's absmax). An eval pass first: it
    would repack NF4 weights for bitsandbytes' CPU kernel, which has no backward (prepare_for_training)."""
    torch.manual_seed(0)
    full, _ = build_model(base_dir, LoraSettings(dropout=0.0), "cpu")
    quant, _ = build_model(base_dir, LoraSettings(dropout=0.0), "cpu", quantize=method)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in full.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for model in (full, quant):
        set_trainable(model, "qformer_all")
        enable_checkpointing(model)
    quant.eval()
    with torch.no_grad():
        quant(*_batch()[:2])
    a, b = _lora_grads(full), _lora_grads(quant, lora_from=full)
    assert a.keys() == b.keys() and len(a) == 2 * len(quant.llm.model.layers)
    for name in a:
        assert float(b[name].abs().sum()) > 0, name
        cos = torch.nn.functional.cosine_similarity(a[name].flatten(), b[name].flatten(), dim=0)
        assert cos > (0.999 if method == "int8" else 0.95), (name, float(cos))
    trained = [p for p in quant.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert not any(p.requires_grad for n, p in quant.named_parameters() if n.startswith("llm.") and ".lora_" not in n)


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_reloads_exactly_over_the_quantized_base(base_dir, tmp_path, method):
    model, _ = build_model(base_dir, LoraSettings(), "cpu", quantize=method)
    names = set_trainable(model, "qformer_all")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_trained(model, names, tmp_path / "ckpt", {"base_dir": str(base_dir), "quantize": method})
    assert set(load_file(str(tmp_path / "ckpt" / "adapter_model.safetensors"))) == set(names)
    loaded, _ = load_model(base_dir, tmp_path / "ckpt", quantize=method)
    model.eval()
    pack_for_cpu_inference(model)  # the loader's NF4 kernel (where the CPU has it) on both sides, for equality
    ids, audio, _ = _batch()
    with torch.no_grad():
        assert torch.equal(model(ids, audio_input=audio).logits, loaded(ids, audio_input=audio).logits)


@pytest.mark.parametrize("method", METHODS)
def test_qlora_run_saves_trained_tensors_that_load_over_either_base(base_dir, synth_data, tmp_path, method,
                                                                     monkeypatch, caplog):
    import fusionaudio.train.run as run

    calls = []
    monkeypatch.setattr(run, "enable_checkpointing", lambda m: calls.append(m) or enable_checkpointing(m))
    out = tmp_path / "run"
    train(base_model=str(base_dir), data_path=str(synth_data), output_dir=str(out), batch_size=4,
          micro_batch_size=4, max_steps=2, learning_rate=1e-2, quantize=method, **FAST)
    assert len(calls) == 1  # gradient checkpointing, without asking
    args = json.loads((out / "training_args.json").read_text())
    assert args["quantize"] == method
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert set(saved) == set(args["trainable_names"])
    assert not [k for k in saved if k.startswith("llm.") and ".lora_" not in k]  # no base Llama weight
    assert all(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)  # LoRA learned
    ids, audio, _ = _batch()
    logits = {}
    for q in (method, None):
        model, _ = load_model(base_dir, out, quantize=q)
        lora = {n: p for n, p in model.named_parameters() if ".lora_" in n}
        assert all(torch.equal(lora[k].float(), saved[k]) for k in lora)
        with torch.no_grad():
            logits[q] = model(ids, audio_input=audio).logits
    deviation = float((logits[method] - logits[None]).abs().max())
    # the base's quantization, nothing more: tests/gama/test_quantize.py's bounds for this model (measured
    # here: int8 0.0042, nf4 0.043)
    assert 0 < deviation < {"int8": 0.0125, "nf4": 0.1}[method], deviation
    # `fusionaudio export --merge` of this run: into the full-precision weights, saying so
    from fusionaudio.gama.export import export

    with caplog.at_level(logging.WARNING):
        merged_dir = export(str(base_dir), str(tmp_path / "merged"), str(out), merge=True)
    assert any(f"trained over a {method} base" in r.getMessage() for r in caplog.records)
    merged, _ = load_model(merged_dir)
    assert not merged.lora_enabled
    with torch.no_grad():
        assert torch.allclose(merged(ids, audio_input=audio).logits, logits[None], atol=1e-4)


def test_quantize_refuses_what_would_train_the_llama(base_dir, synth_data, tmp_path):
    with pytest.raises(UsageError, match="keeps the Llama frozen.*full"):
        train(base_model=str(base_dir), data_path=str(synth_data), output_dir=str(tmp_path), max_steps=1,
              quantize="nf4", trainable_params="full", **FAST)
    with pytest.raises(UsageError, match="none, int8, nf4"):
        train(base_model=str(base_dir), data_path=str(synth_data), output_dir=str(tmp_path), max_steps=1,
              quantize="int4", **FAST)
