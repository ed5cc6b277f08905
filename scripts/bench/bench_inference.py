#!/usr/bin/env python3
"""Inference benchmark: a reference-style loop vs this project's batched path.

Reference-style: batch 1, float32, each file's fbank computed on the CPU, one generate per
request (the reference's quick_inference / gama_inf loop). Batched: one fbank pass for
all clips on the device, left-padded batches, the chosen dtype. Both generate exactly
``--new_tokens`` tokens per request (eos ignored) so the work is the same.

    python scripts/bench/bench_inference.py                      # tiny config, CPU
    python scripts/bench/bench_inference.py --preset gama-llama2-7b --device cuda --dtype bfloat16

Random weights (the timing does not depend on their values); prints clips/s, new tokens/s
and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fusionaudio.audio import load_fbank, load_fbank_batch
from fusionaudio.inference import FusionAudioInference, Request
from fusionaudio.model import GamaConfig, GamaForCausalLM
from fusionaudio.model.loading import resolve_dtype
from fusionaudio.tiny import train_tokenizer

QUESTIONS = ["Describe the audio.", "What is the loudest sound?", "How many distinct sounds are there?",
             "Is there speech in this clip?"]


def make_clips(folder: Path, n: int, seconds: float) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sr = (16000, 22050, 44100)[i % 3]
        t = np.arange(int(seconds * sr)) / sr
        wave = 0.2 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:03d}.wav"
        sf.write(str(path), wave.astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(path))
    return paths


def build_engine(preset: str, device: torch.device, dtype: torch.dtype, tok_dir: Path) -> FusionAudioInference:
    """An inference object around a randomly initialised model of the preset's shape."""
    config = GamaConfig.from_name(preset)
    tokenizer = train_tokenizer(tok_dir, vocab_size=int(config.llm["vocab_size"]))  # as many pieces as embedding rows
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "left"
    with torch.device(device):
        model = GamaForCausalLM(config).to(dtype)
    model.enable_lora()
    model.to(device=device, dtype=dtype).eval()
    engine = FusionAudioInference.__new__(FusionAudioInference)
    engine.device, engine.model, engine.tokenizer, engine.template = device, model, tokenizer, "alpaca_short"
    return engine


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="batched path dtype (default float32 on CPU, bfloat16 on GPU)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--new_tokens", type=int, default=32)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_clips(tmp, args.clips, args.seconds)
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(len(paths))]
        gen = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

        ref_engine = build_engine(args.preset, device, torch.float32, tmp / "tok")
        # warm-up (allocations, kernels)
        ref_engine.model.generate(torch.tensor([[1, 2, 3]]), None, torch.zeros(1, 1024, 128), max_new_tokens=2,
                                  do_sample=False)
        sync(device)
        t0 = time.perf_counter()
        for path, q in zip(paths, questions):
            fbank = load_fbank(path)  # per file, on the CPU
            ref_engine._generate_chunk([Request(q, fbank)], ref_engine.generation_config(**gen))
        sync(device)
        ref_s = time.perf_counter() - t0
        del ref_engine
        if device.type == "cuda":
            torch.cuda.empty_cache()

        engine = build_engine(args.preset, device, dtype, tmp / "tok2")
        engine.model.generate(torch.tensor([[1, 2, 3]]), None, torch.zeros(1, 1024, 128), max_new_tokens=2,
                              do_sample=False)
        sync(device)
        t0 = time.perf_counter()
        fbanks, _ = load_fbank_batch(paths, device=device)
        engine.generate([Request(q, fb) for q, fb in zip(questions, fbanks)], batch_size=args.batch_size, **gen)
        sync(device)
        new_s = time.perf_counter() - t0

    n, tokens = len(paths), len(paths) * args.new_tokens
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"preset={args.preset} device={name} clips={n} x {args.seconds:.1f}s new_tokens/clip={args.new_tokens}")
    print(f"reference-style (batch 1, fp32, per-file CPU fbank): {n / ref_s:8.2f} clips/s {tokens / ref_s:9.1f} new tok/s")
    print(f"batched (batch {args.batch_size}, {str(dtype).replace('torch.', '')}, batched fbank): "
          f"{n / new_s:8.2f} clips/s {tokens / new_s:9.1f} new tok/s")
    print(f"speed-up: {ref_s / new_s:.2f}x")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
