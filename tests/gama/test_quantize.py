"""GAMA with ``quantize="int8"`` / ``"nf4"`` (bitsandbytes, CPU): what is quantized, that every quantized
weight is its file's weight within the format's rounding, the logits against full precision (bounds with
their margins below), checkpoints over a quantized base, and merging."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from fusionaudio.errors import CheckpointError, UsageError
from fusionaudio.gama.loading import load_model, save_local
from fusionaudio.gama.tiny import make_reference_base_dir
from fusionaudio.loading.quantize import prepare_for_training

CLIP = Path(__file__).resolve().parents[2] / "data" / "example" / "demo_clip.wav"
METHODS = ("int8", "nf4")
BNB_CLASS = {"int8": "Linear8bitLt", "nf4": "Linear4bit"}
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def plain_base_dir(tmp_path_factory):
    """A tiny reference base in safetensors shards with the Llama's own initialisation (std 0.02): logits
    of a sane spread, unlike the session's ``tiny_base_dir`` (std 0.2, chaotic on purpose)."""
    return make_reference_base_dir(tmp_path_factory.mktemp("plain_base"), "tiny", seed=0, weights="safetensors")


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(3, 500, (2, 12), generator=gen), torch.randn(2, 1024, 128, generator=gen)


def _same_nonzero_lora(ref, other) -> None:
    """A LoRA that matters (B non-zero), drawn from a fixed seed, the same in both models."""
    gen = torch.Generator().manual_seed(1)
    params = dict(other.named_parameters())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.2 if "lora_B" in name else 0.1))
                params[name].copy_(p)


def _stored_absmax(state) -> torch.Tensor:
    """An NF4 block's scale as stored: itself quantized to 8 bits (QLoRA's double quantization)."""
    import bitsandbytes.functional as bf

    return (bf.dequantize_blockwise(state.absmax, state.state2) + state.offset).float() if state.nested \
        else state.absmax.float()


def _dequantized(module) -> torch.Tensor:
    import bitsandbytes.functional as bf

    if type(module).__name__ == "Linear8bitLt":
        return module.weight.data.float() * module.weight.SCB.float()[:, None] / 127
    return bf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()


@pytest.mark.parametrize("method", METHODS)
def test_quantized_llama_generates_and_keeps_the_audio_side(tiny_base_dir, method):
    model, tok = load_model(tiny_base_dir, quantize=method, dtype=torch.bfloat16)
    layers = model.llm.model.layers
    kinds = {type(layer.get_submodule(f"{part}.{name}").get_base_layer() if name in ("q_proj", "v_proj")
                  else layer.get_submodule(f"{part}.{name}")).__name__
             for layer in layers for part, names in (("self_attn", LLAMA_LINEARS[:4]), ("mlp", LLAMA_LINEARS[4:]))
             for name in names}
    assert kinds == {BNB_CLASS[method]}
    # the audio side, the embeddings and lm_head stay plain, in the compute dtype
    assert type(model.llm.lm_head) is torch.nn.Linear and model.llm.lm_head.weight.dtype == torch.bfloat16
    plain = [m for m in (model.audio_encoder, model.qformer, model.audio_proj_qformer, model.audio_aggregator_layer_1)
             for m in m.modules() if isinstance(m, torch.nn.Linear)]
    assert plain and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 for m in plain)
    # LoRA (unmerged, peft's bitsandbytes layers) in the compute dtype
    lora = [p for n, p in model.named_parameters() if ".lora_" in n]
    assert len(lora) == 2 * 2 * len(layers) and all(p.dtype == torch.bfloat16 for p in lora)
    ids, audio = _inputs()
    new = model.generate(ids, torch.ones_like(ids), audio.to(torch.bfloat16), max_new_tokens=4, min_new_tokens=4,
                         do_sample=False, pad_token_id=0)
    assert new.shape == (2, 4)


@pytest.mark.parametrize("method", METHODS)
def test_each_quantized_weight_is_its_files_weight_within_the_format_rounding(tiny_base_dir, method):
    """Every quantized layer dequantizes to the weight the file holds under its name, within the rounding
    the format allows: int8 rows round to the nearest of 255 levels (error <= row absmax / 254, after
    bitsandbytes' fp16 cast of the weight); NF4 blocks of 64 round to the nearest of its 16 levels (error <=
    half the widest gap between levels x the block's absmax, plus the error of that absmax, which is stored
    in 8 bits: QLoRA's double quantization).
    A weight in the wrong layer, transposed or mis-scaled is far outside these bounds."""
    from bitsandbytes.functional import get_4bit_type

    full, _ = load_model(tiny_base_dir)
    quant, _ = load_model(tiny_base_dir, quantize=method)
    prepare_for_training(quant)  # NF4 weights come repacked for the CPU kernel: back to bitsandbytes' layout
    weights = {n.replace(".base_layer", ""): p for n, p in full.named_parameters()}
    levels = get_4bit_type("nf4", device="cpu").sort().values
    half_gap = float((levels[1:] - levels[:-1]).max()) / 2
    checked = 0
    for name, module in quant.named_modules():
        if type(module).__name__ != BNB_CLASS[method]:
            continue
        w = weights[name.replace(".base_layer", "") + ".weight"].detach().float()
        error = (_dequantized(module) - w).abs()
        if method == "int8":
            bound = w.abs().amax(1, keepdim=True) / 254 + w.abs() * 2 ** -10 + 1e-7
        else:  # a block rounds against its true absmax and is scaled back by the 8-bit-stored one
            stored = _stored_absmax(module.weight.quant_state)[:, None]
            true = w.reshape(-1, 64).abs().amax(1, keepdim=True)
            bound = (true * half_gap + (true - stored).abs() + 1e-6).expand(-1, 64).reshape(w.shape)
        assert bool((error <= bound).all()), (name, float((error / bound).max()))
        checked += 1
    assert checked == 7 * len(quant.llm.model.layers)


#: Max |logit - full-precision logit|, measured by scripts/bench/quantize_error.py (CPU, bitsandbytes 0.50.2):
#: the tiny model with the Llama's own initialisation (logit std 0.16), input seed 0: int8 0.0062, nf4 0.0499
#: (seeds 0-3: 0.0056-0.0062, 0.0499-0.0523); the bundled demo model on its clip's prompt and caption (logits up
#: to 17): int8 0.118, nf4 0.725. The bounds are twice these. Quantizing and the kernels are deterministic, so
#: the margin only covers other CPUs' kernel paths: bitsandbytes' AVX512-BF16 NF4 kernel and its reference path
#: differ here by 0.0025 on the tiny model, 5% of the nf4 deviation. The faults these tests are for move the
#: logits by more: the demo model with its LoRA dropped moves 2.1; the LoRA merged into NF4 weights moved 1.7 in
#: the issue's measurement; a weight in the wrong place or scale is caught by the rounding test above.
TINY_BOUND = {"int8": 0.0125, "nf4": 0.1}
DEMO_BOUND = {"int8": 0.25, "nf4": 1.5}


@pytest.mark.parametrize("method", METHODS)
def test_quantized_logits_stay_near_full_precision_on_the_tiny_model(plain_base_dir, method):
    ids, audio = _inputs()
    ref, _ = load_model(plain_base_dir)
    quant, _ = load_model(plain_base_dir, quantize=method)
    _same_nonzero_lora(ref, quant)
    with torch.no_grad():
        a, b = ref(ids, audio_input=audio).logits, quant(ids, audio_input=audio).logits
    deviation = float((a - b).abs().max())
    assert deviation < TINY_BOUND[method], deviation
    assert deviation > 0  # the Llama really runs quantized
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    assert agree >= (1.0 if method == "int8" else 0.9), agree


@pytest.mark.parametrize("method", METHODS)
def test_quantized_logits_stay_near_full_precision_on_the_demo_model(method):
    """Teacher-forced on the full-precision model's own greedy caption of the bundled clip."""
    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.inference import DEMO_MODEL_DIR, FusionAudioInference
    from fusionaudio.gama.prompts import build_prompt

    caption = FusionAudioInference(None).predict(CLIP, "Describe the audio.", do_sample=False, max_new_tokens=80)
    ref, tok = load_model(DEMO_MODEL_DIR)
    quant, _ = load_model(DEMO_MODEL_DIR, quantize=method)
    fbank = load_fbank(CLIP)[None]
    ids = tok([build_prompt("Describe the audio.") + caption], return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = ref(ids, audio_input=fbank).logits, quant(ids, audio_input=fbank).logits
    deviation = float((a - b).abs().max())
    assert 0 < deviation < DEMO_BOUND[method], deviation
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    assert agree >= (1.0 if method == "int8" else 0.95), agree


def test_checkpoint_setting_quantized_weights_is_refused(tiny_base_dir, tmp_path):
    full, tok = load_model(tiny_base_dir)
    save_local(full, tok, tmp_path / "full")  # every tensor, the Llama's linear weights included
    with pytest.raises(CheckpointError, match=r"holds quantized \(quantize='int8'\).*quantize='none'"):
        load_model(tiny_base_dir, tmp_path / "full" / "model.safetensors", quantize="int8")


def test_nan_in_a_weight_to_quantize_is_named(tiny_base_dir, tmp_path):
    full, tok = load_model(tiny_base_dir)
    with torch.no_grad():
        full.llm.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    save_local(full, tok, tmp_path / "bad")
    with pytest.raises(CheckpointError, match=r"NaN/inf.*layers\.1\.mlp\.up_proj\.weight"):
        load_model(tmp_path / "bad", quantize="nf4")
    model, _ = load_model(tmp_path / "bad", quantize="nf4", check_values=False)  # the user's call
    assert model is not None


def test_merging_lora_into_quantized_weights_is_refused(tiny_base_dir):
    from fusionaudio.gama.export import merge_lora

    model, _ = load_model(tiny_base_dir, quantize="nf4")
    with pytest.raises(UsageError, match="not merged into 8/4-bit weights"):
        merge_lora(model)


def test_bad_quantize_value_and_missing_bitsandbytes(tiny_base_dir, monkeypatch):
    with pytest.raises(UsageError, match="one of none, int8, nf4, got 'int4'"):
        load_model(tiny_base_dir, quantize="int4")
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UsageError) as err:
        load_model(tiny_base_dir, quantize="int8")
    assert "\n" not in str(err.value) and "pip install 'bitsandbytes==" in str(err.value)


def test_quantized_load_logs_nothing_per_call(tiny_base_dir, caplog):
    """bitsandbytes' per-call notice (the int8 method's own fp16 cast) is not shown to users."""
    model, _ = load_model(tiny_base_dir, quantize="int8")
    ids, audio = _inputs()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(ids, audio_input=audio)
    assert not [r for r in caplog.records if r.name.startswith("bitsandbytes")]
