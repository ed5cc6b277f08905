"""AudSemThinker with ``quantize="int8"`` / ``"nf4"`` (transformers' bitsandbytes loader, CPU): the language
model quantized and the audio tower not, logits against full precision, QLoRA with
``fusionaudio.audsem.train``, adapters over either base, merged exports into the full-precision thinker."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from fusionaudio.audsem import AudSemThinkerInference
from fusionaudio.audsem.tiny import build_tiny_checkpoint
from fusionaudio.audsem.train import train, training_model

METHODS = ("int8", "nf4")
BNB_CLASS = {"int8": "Linear8bitLt", "nf4": "Linear4bit"}
OUTPUT = ("<think>A steady hum.</think>\n<semantic_elements>what: a machine</semantic_elements>\n"
          "<answer>A machine hums.</answer>")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("audsem_quant")
    base = build_tiny_checkpoint(root / "thinker", seed=0)
    sf.write(root / "tone.wav", (0.2 * np.sin(np.arange(32000) * 0.05)).astype(np.float32), 16000)
    (root / "data.json").write_text(json.dumps(
        [{"audio_id": "tone.wav", "instruction": q, "input": "", "output": OUTPUT} for q in ("Describe.", "What?")]))
    return root, base


def _linear_kinds(module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("method", METHODS)
def test_language_model_quantized_audio_tower_not(ckpt, method):
    root, base = ckpt
    engine = AudSemThinkerInference(base, quantize=method)
    thinker = engine.model
    assert _linear_kinds(thinker.model.language_model) == {BNB_CLASS[method]}
    assert _linear_kinds(thinker.model.audio_tower) == {"Linear"}
    assert type(thinker.lm_head) is torch.nn.Linear
    answer = engine.predict(str(root / "tone.wav"), "Describe the audio.", max_new_tokens=4)
    assert isinstance(answer, str) and answer


#: Max |logit - full precision| with audio, measured by scripts/bench/quantize_error.py: int8 0.0063, nf4 0.0682
#: (logit std 0.16; argmax agreement 0.986 / 0.923, near-ties of a random model). Bounds: twice the deviation
#: (deterministic kernels; see tests/gama/test_quantize.py for the margin's reasons) and agreement >= 0.9 / 0.8.
BOUND = {"int8": (0.0125, 0.9), "nf4": (0.14, 0.8)}


@pytest.mark.parametrize("method", METHODS)
def test_quantized_logits_stay_near_full_precision(ckpt, method):
    root, base = ckpt
    full, quant = AudSemThinkerInference(base), AudSemThinkerInference(base, quantize=method)
    wave = (0.2 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    inputs = full.processor([full.prompt("Describe the audio.", True)], audio=[wave], padding_side="left")
    with torch.no_grad():
        a, b = full.model(**inputs).logits, quant.model(**inputs).logits
    deviation = float((a - b).abs().max())
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    assert 0 < deviation < BOUND[method][0] and agree >= BOUND[method][1], (deviation, agree)


@pytest.mark.parametrize("method", METHODS)
def test_qlora_adapter_loads_over_either_base(ckpt, tmp_path, method, caplog):
    root, base = ckpt
    out = tmp_path / "run"
    result = train(str(base), str(root / "data.json"), str(out), lr=1e-2, batch_size=2, max_steps=2,
                   lora_dropout=0.0, seed=0, quantize=method)
    assert result["steps"] == 2 and all(np.isfinite(result["losses"]))
    assert json.loads((out / "train_config.json").read_text())["quantize"] == method
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)  # the adapter only: no base weight
    assert all(float(v.abs().sum()) > 0 for k, v in saved.items() if "language_model" in k and "lora_B" in k)
    answers = {}
    for q in (method, None):
        engine = AudSemThinkerInference(base, model_path=out, quantize=q)
        answers[q] = engine.predict(str(root / "tone.wav"), "Describe.", max_new_tokens=4)
    assert all(isinstance(a, str) for a in answers.values())
    from fusionaudio.audsem.export import export_merged

    with caplog.at_level(logging.WARNING):
        merged = export_merged(base, out, tmp_path / "merged")
    assert any(f"trained over a {method} base" in r.getMessage() for r in caplog.records)
    assert AudSemThinkerInference(merged).predict(str(root / "tone.wav"), "Describe.", max_new_tokens=4) == answers[None]


@pytest.mark.parametrize("method", METHODS)
def test_qlora_model_trains_fp32_lora_with_checkpointing(ckpt, method):
    root, base = ckpt
    lora = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="q_proj,v_proj")
    model = training_model(base, torch.float32, "cpu", lora, quantize=method)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n and p.dtype == torch.float32 for n, p in trained)
    assert model.base_model.model.is_activation_checkpointing
