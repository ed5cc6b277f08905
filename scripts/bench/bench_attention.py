#!/usr/bin/env python3
"""SDPA vs eager attention in the Q-Former / aggregator, and bfloat16 vs float32 on CPU.

On the reference fbank fixtures (``../shared/reference/*.fbank.npy``, else random fbanks), for a model
whose audio side has the released 7B shape (CAV-MAE 768-d x 12 blocks, Q-Former 768-d x 12 layers) and a
small random Llama (``--llm tiny``), prints the largest logit difference against the eager float32 path
and the seconds per ``encode_audio`` / forward call.

    python scripts/bench/bench_attention.py [--audio_preset gama-llama2-7b] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fusionaudio.gama import GamaConfig, GamaForCausalLM

REF = Path(__file__).resolve().parents[3] / "shared" / "reference"


def fixtures() -> torch.Tensor:
    files = sorted(REF.glob("*.fbank.npy"))
    if not files:
        print("(no reference fixtures found: random fbanks)")
        return torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(0))
    print("fixtures:", ", ".join(f.name for f in files))
    return torch.stack([torch.from_numpy(np.load(f)).float() for f in files])


def timed(fn, repeats):
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - t0) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio_preset", default="gama-llama2-7b")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    big = GamaConfig.from_name(args.audio_preset)
    tiny = GamaConfig.from_name("tiny")
    cfg = GamaConfig.from_name(args.audio_preset, llm={**big.llm, **{k: tiny.llm[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads")}})
    model = GamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial random weights everywhere
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    fb = fixtures()
    ids = torch.randint(3, cfg.llm["vocab_size"], (fb.shape[0], 24), generator=torch.Generator().manual_seed(1))
    print(f"audio side of {args.audio_preset}; llm hidden {cfg.hidden_size}; torch threads {torch.get_num_threads()}")
    rows = []
    with torch.no_grad():
        for impl in ("eager", "sdpa"):
            model.set_attention(impl)
            tokens, t_enc = timed(lambda: model.encode_audio(fb), args.repeats)
            logits, t_fwd = timed(lambda: model(ids, fb).logits, args.repeats)
            rows.append((impl, "float32", tokens, logits, t_enc, t_fwd))
        model.set_attention("sdpa")
        model.to(torch.bfloat16)
        tokens, t_enc = timed(lambda: model.encode_audio(fb), args.repeats)
        logits, t_fwd = timed(lambda: model(ids, fb).logits, args.repeats)
        rows.append(("sdpa", "bfloat16", tokens, logits, t_enc, t_fwd))
    ref_tokens, ref_logits = rows[0][2], rows[0][3]
    print(f"{'attention':9} {'dtype':8} {'max|d tokens|':>14} {'max|d logits|':>14} {'encode s':>9} {'forward s':>9}")
    for impl, dtype, tokens, logits, t_enc, t_fwd in rows:
        dt = (tokens.float() - ref_tokens).abs().max().item()
        dl = (logits.float() - ref_logits).abs().max().item()
        print(f"{impl:9} {dtype:8} {dt:14.3e} {dl:14.3e} {t_enc:9.3f} {t_fwd:9.3f}")
    print("bf16 on this CPU:", "native (avx512_bf16/amx)" if torch.backends.cpu.get_cpu_capability() in
          ("AVX512_BF16", "AMX") else f"capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
