#!/usr/bin/env python3
"""Training throughput and peak memory (random weights, synthetic inputs).

    python scripts/bench/bench_train.py                       # CPU: the tiny preset (+ GPU part if CUDA)
    python scripts/bench/bench_train.py --preset gama-llama2-7b --micro_batches 1,2,4,8 --device cuda
    python scripts/bench/bench_train.py --preset small --bf16 true --quantize nf4 --micro_batches 1,4   # QLoRA

One training step = forward + backward + AdamW over ``micro_batch`` examples of 96 audio
tokens + ``text_len`` text tokens, with the trainer's settings (``trainable_params``, LoRA,
fp32 trained weights; on GPU frozen weights in bf16, bf16 autocast, optionally gradient
checkpointing). Reports samples/s and peak memory: on CPU the process's peak RSS
(``resource.getrusage``; torch's allocator is invisible to tracemalloc), on GPU
``torch.cuda.max_memory_allocated``/``reserved``; ``--engine`` runs the same step through the
trainer's accelerate engine (``fusionaudio.train.loop.make_accelerator``, ``accumulate``,
``backward``, ``clip_grad_norm_``; one process), to compare with the bare step; "fits_24gb" compares the reserved peak
with 24 GiB less 1 GiB of CUDA context. The 7B model is built directly on the GPU
(``GamaForCausalLM`` under ``torch.device``), so no checkpoint is needed.

``--preset small`` is the 7B's audio side with 2 Llama layers at 4096. ``--quantize int8|nf4`` is QLoRA as
``fusionaudio.train --quantize`` runs it: the Llama's linear layers quantized one at a time (bitsandbytes),
LoRA over them, gradient checkpointing on. On CPU the peak is the RSS high-water mark over the steps only
(reset through ``/proc/self/clear_refs`` once the model is built), beside the RSS the model holds before
them; for ``small`` an estimate (stated as such) of the 7B's peak follows.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.modeling import GamaForCausalLM
from fusionaudio.train import enable_checkpointing, parameter_counts, set_trainable

GIB = 1024 ** 3


def config_of(preset: str) -> GamaConfig:
    if preset == "small":  # the 7B's audio side, 2 Llama layers at 4096
        return GamaConfig.from_name("gama-llama2-7b", llm={"num_hidden_layers": 2})
    return GamaConfig.from_name(preset)


def build(preset: str, device: torch.device, bf16: bool, trainable: str, checkpointing: bool,
          quantize: str | None = None):
    config = config_of(preset)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    if bf16:
        torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = GamaForCausalLM(config)
            if quantize:
                from fusionaudio.gama.quantize import quantize_llama

                quantize_llama(model, quantize, torch.bfloat16 if bf16 else torch.float32)
            model.enable_lora()
    finally:
        torch.set_default_dtype(old)
    set_trainable(model, trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if quantize:
        from fusionaudio.loading.quantize import prepare_for_training

        prepare_for_training(model)
    if checkpointing or quantize:
        enable_checkpointing(model)
    return model, params, config


def _rss_now_and_reset_peak() -> float:
    """Current RSS (GiB); the high-water mark (VmHWM) restarts from it (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_gib("VmRSS")


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024 / GIB


def _engine_step(model, opt, device, bf16: bool):
    """A step function through the trainer's engine (accelerate, one process)."""
    import tempfile

    from fusionaudio.train.loop import make_accelerator
    from fusionaudio.train.model_setup import TrainingForward

    acc = make_accelerator("cpu" if device.type == "cpu" else "auto", bf16, 1, [], Path(tempfile.mkdtemp()))
    wrapped, opt = acc.prepare(TrainingForward(model), opt)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(ids, fbank):
        with acc.accumulate(wrapped):
            loss = wrapped(ids, torch.ones_like(ids), ids, fbank, torch.arange(ids.shape[0], device=device)).loss
            acc.backward(loss)
            acc.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def bench_step(model, params, config, device, micro_batch: int, text_len: int, steps: int, bf16: bool,
               engine: bool = False) -> dict:
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = int(config.llm["vocab_size"])
    fbank = torch.randn(micro_batch, config.audio.target_length, config.audio.num_mel_bins, device=device)
    ids = torch.randint(3, vocab, (micro_batch, text_len), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()
    model.qformer.eval()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine_step = _engine_step(model, opt, device, bf16) if engine else None
    rss_before = None if device.type == "cuda" else _rss_now_and_reset_peak()
    times = []
    for i in range(steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        if engine_step is not None:
            engine_step(ids, fbank)
        else:
            with autocast:
                loss = model(ids, fbank, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    out = {"micro_batch": micro_batch, "text_len": text_len, "engine": engine, "step_s": round(step_s, 4),
           "samples_per_s": round(micro_batch / step_s, 2)}
    if device.type == "cuda":
        out["max_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        out["max_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 2)
        out["fits_24gb"] = out["max_reserved_gib"] <= 23.0
    else:
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)
        out["rss_before_steps_gib"] = round(rss_before, 3)
        out["step_peak_rss_gib"] = round(_status_gib("VmHWM"), 3)
    del opt
    return out


def run(preset: str, device: str, micro_batches: list[int], text_len: int, steps: int, trainable: str,
        checkpointing: bool | None, bf16: bool | None, engine: bool = False, quantize: str | None = None) -> dict:
    dev = torch.device(device)
    bf16 = dev.type == "cuda" if bf16 is None else bf16
    checkpointing = (dev.type == "cuda" if checkpointing is None else checkpointing) or bool(quantize)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    model, params, config = build(preset, dev, bf16, trainable, checkpointing, quantize)
    n_train, n_total = parameter_counts(model)
    result = {"preset": preset, "device": str(dev), "bf16": bf16, "quantize": quantize or "none",
              "gradient_checkpointing": checkpointing,
              "trainable_params": trainable, "trainable": n_train, "total": n_total,
              "rss_before_model_gib": round(rss0, 3), "runs": []}
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    for mb in micro_batches:
        try:
            result["runs"].append(bench_step(model, params, config, dev, mb, text_len, steps, bf16, engine))
        except torch.OutOfMemoryError:
            result["runs"].append({"micro_batch": mb, "error": "out of memory"})
            torch.cuda.empty_cache()
        print(json.dumps(result["runs"][-1]), flush=True)
    if preset == "small" and dev.type == "cpu" and result["runs"] and "step_peak_rss_gib" in result["runs"][-1]:
        result["estimate_7b"] = estimate_7b(config, quantize, bf16, result["runs"][-1])
        print("ESTIMATE, not a measurement: " + json.dumps(result["estimate_7b"]), flush=True)
    return result


def weight_gib(config: GamaConfig, quantize: str | None, frozen_bytes: int = 2, layers: int | None = None) -> float:
    """Bytes the model's weights take: the Llama's linear layers at 1 (int8, + a fp32 scale per row) or 0.5
    byte (nf4, + ~0.13 bit of double-quantized block scales) per weight, the rest at ``frozen_bytes``."""
    with torch.device("meta"):
        cfg = GamaConfig.from_dict({**config.to_dict(), "llm": {**config.llm, "num_hidden_layers": layers or
                                                                 config.llm["num_hidden_layers"]}})
        model = GamaForCausalLM(cfg)
    total = 0.0
    for name, p in model.named_parameters():
        linear = name.startswith("llm.model.layers.") and name.endswith("_proj.weight")
        if linear and quantize == "int8":
            total += p.numel() + p.shape[0] * 4
        elif linear and quantize == "nf4":
            total += p.numel() * (0.5 + 0.127 / 8)
        else:
            total += p.numel() * frozen_bytes
    return total / GIB


def estimate_7b(config: GamaConfig, quantize: str | None, bf16: bool, last: dict) -> dict:
    """An estimate of a 7B step's peak from the small preset's: the 7B's weight bytes, plus what the small
    model's step added above its resident weights (activations of the recomputed layer and the audio side, LoRA
    and audio gradients, AdamW state: the same for 2 or 32 layers under checkpointing, bar LoRA's share), plus
    the 30 more layers' checkpointed inputs (micro-batch x tokens x 4096 x 4 bytes each), plus 1 GiB of CUDA
    context."""
    frozen = 2 if bf16 else 4
    small_weights, big_weights = weight_gib(config, quantize, frozen), weight_gib(config, quantize, frozen, 32)
    step_extra = last["step_peak_rss_gib"] - last["rss_before_steps_gib"]
    tokens = last["micro_batch"] * (96 + last["text_len"])
    checkpoints = 30 * tokens * config.llm["hidden_size"] * 4 / GIB
    peak = big_weights + step_extra + checkpoints + 1.0
    return {"weights_gib_small_computed": round(small_weights, 2), "weights_gib_7b_computed": round(big_weights, 2),
            "step_extra_gib_measured_small": round(step_extra, 2), "checkpointed_inputs_gib": round(checkpoints, 3),
            "cuda_context_gib_assumed": 1.0, "estimated_7b_step_peak_gib": round(peak, 2),
            "fits_24gb_card_estimated": peak <= 23.0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="model preset (default: tiny on CPU; the CPU run, then "
                   "gama-llama2-7b on CUDA when a GPU is present); small: the 7B's audio side, 2 Llama layers")
    p.add_argument("--device", default=None)
    p.add_argument("--micro_batches", default=None, help="comma-separated (default: 1,4,8 CPU; 1,2,4,8 GPU)")
    p.add_argument("--text_len", type=int, default=None, help="text tokens per example (default 64 CPU, 256 GPU)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--trainable_params", default="qformer_all")
    p.add_argument("--gradient_checkpointing", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    p.add_argument("--bf16", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    p.add_argument("--engine", action="store_true", help="step through the trainer's accelerate engine")
    p.add_argument("--quantize", default="none", choices=["none", "int8", "nf4"],
                   help="QLoRA: the Llama's linear layers in 8 / 4 bits (bitsandbytes), gradient checkpointing on")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)
    plans = []
    if a.preset or a.device:
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        plans.append((a.preset or ("gama-llama2-7b" if dev.startswith("cuda") else "tiny"), dev))
    else:
        plans.append(("tiny", "cpu"))
        if torch.cuda.is_available():
            plans.append(("gama-llama2-7b", "cuda"))
    results = []
    for preset, dev in plans:
        gpu = dev.startswith("cuda")
        mbs = [int(x) for x in (a.micro_batches or ("1,2,4,8" if gpu else "1,4,8")).split(",")]
        text_len = a.text_len or (256 if gpu else 64)
        results.append(run(preset, dev, mbs, text_len, a.steps, a.trainable_params, a.gradient_checkpointing, a.bf16,
                           a.engine, None if a.quantize == "none" else a.quantize))
    print(json.dumps(results, indent=2))
    if a.output:
        with open(a.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
