"""How far ``quantize="int8"`` / ``"nf4"`` moves the logits from full precision (the figures behind the bounds
of tests/gama/test_quantize.py and tests/audsem/test_audsem_quantize.py), on CPU, fp32 compute:

* GAMA, the tiny model with the Llama's own initialisation, a fixed non-zero LoRA, 4 input seeds; NF4 also
  with bitsandbytes' AVX512-BF16 kernel switched off (how much the kernel path alone moves the logits);
* the bundled demo model on its clip, teacher-forced on the full-precision greedy caption, beside a fault
  (its LoRA dropped), and each method's greedy caption scored against the clip's scene;
* AudSemThinker's tiny thinker with audio.

    python scripts/bench/quantize_error.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
CLIP = REPO / "data" / "example" / "demo_clip.wav"


def _set_lora(ref, others) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.2 if "lora_B" in name else 0.1))
                for other in others:
                    dict(other.named_parameters())[name].copy_(p)


def _compare(label: str, a: torch.Tensor, b: torch.Tensor) -> None:
    d = (a - b).abs()
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    print(f"  {label:<34} max |dlogit| {float(d.max()):.4f}  mean {float(d.mean()):.5f}  argmax agree {agree:.3f}")


def gama_tiny(work: Path) -> None:
    from fusionaudio.gama.loading import load_model
    from fusionaudio.gama.tiny import make_reference_base_dir

    base = make_reference_base_dir(work / "tiny", "tiny", seed=0, weights="safetensors")
    ref, _ = load_model(base)
    models = {m: load_model(base, quantize=m)[0] for m in ("int8", "nf4")}
    slow = load_model(base, quantize="nf4")[0]
    for module in slow.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    _set_lora(ref, [*models.values(), slow])
    print("GAMA tiny (Llama init std 0.02), fp32 compute")
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        ids, audio = torch.randint(3, 500, (2, 12), generator=gen), torch.randn(2, 1024, 128, generator=gen)
        with torch.no_grad():
            full = ref(ids, audio_input=audio).logits
            print(f" input seed {seed}: logit std {float(full.std()):.3f}")
            for method, model in models.items():
                _compare(method, full, model(ids, audio_input=audio).logits)
            _compare("nf4: AVX512-BF16 kernel vs reference", models["nf4"](ids, audio_input=audio).logits,
                     slow(ids, audio_input=audio).logits)


def gama_demo() -> None:
    from fusionaudio.audio import load_fbank
    from fusionaudio.demo.scenes import DEMO_SCENE
    from fusionaudio.demo.score import attribute_accuracy
    from fusionaudio.gama.inference import DEMO_MODEL_DIR, FusionAudioInference
    from fusionaudio.gama.loading import load_model
    from fusionaudio.gama.prompts import build_prompt

    engines = {m: FusionAudioInference(None, quantize=None if m == "fp32" else m) for m in ("fp32", "int8", "nf4")}
    print("GAMA bundled demo model on data/example/demo_clip.wav")
    for method, engine in engines.items():
        caption = engine.predict(CLIP, "Describe the audio.", do_sample=False, max_new_tokens=80)
        score = attribute_accuracy(caption, DEMO_SCENE)["overall"]
        print(f"  greedy {method}: attribute accuracy {score:.3f}: {caption}")
    caption = engines["fp32"].predict(CLIP, "Describe the audio.", do_sample=False, max_new_tokens=80)
    tok = engines["fp32"].tokenizer
    ids = tok([build_prompt("Describe the audio.") + caption], return_tensors="pt").input_ids
    fbank = load_fbank(CLIP)[None]
    with torch.no_grad():
        full = engines["fp32"].model(ids, audio_input=fbank).logits
        print(f"  teacher-forced on the fp32 caption ({ids.shape[1]} tokens), logits up to {float(full.abs().max()):.1f}")
        for method in ("int8", "nf4"):
            _compare(method, full, engines[method].model(ids, audio_input=fbank).logits)
        faulty, _ = load_model(DEMO_MODEL_DIR)
        for name, p in faulty.named_parameters():
            if "lora_B" in name:
                p.zero_()
        _compare("fault: fp32 with its LoRA dropped", full, faulty(ids, audio_input=fbank).logits)


def audsem_tiny(work: Path) -> None:
    from fusionaudio.audsem.inference import AudSemThinkerInference
    from fusionaudio.audsem.tiny import build_tiny_checkpoint

    base = build_tiny_checkpoint(work / "thinker", seed=0)
    engines = {m: AudSemThinkerInference(base, quantize=None if m == "fp32" else m) for m in ("fp32", "int8", "nf4")}
    wave = (0.2 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    engine = engines["fp32"]
    inputs = engine.processor([engine.prompt("Describe the audio.", True)], audio=[wave], padding_side="left")
    print("AudSemThinker tiny thinker, with audio")
    with torch.no_grad():
        full = engine.model(**inputs).logits
        print(f"  logit std {float(full.std()):.3f}")
        for method in ("int8", "nf4"):
            _compare(method, full, engines[method].model(**inputs).logits)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        gama_tiny(Path(tmp))
        gama_demo()
        audsem_tiny(Path(tmp))


if __name__ == "__main__":
    main()
