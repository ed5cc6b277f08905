#!/usr/bin/env python3
"""Inference benchmark, one run on the same inputs (real audio files of mixed rates on disk):

(a) reference-style loop: batch 1, float32, each file's fbank on the CPU, one generate per request
    (the reference's quick_inference / gama_inf loop), in this process;
(b) the batched API: one fbank pass per batch on the device, left-padded batches of ``--batch_size``;
(c) ``python -m fusionaudio.infer`` end to end in its own process: records file in, merged JSON out
    (imports, model load, loader workers, journal, merge all included).

Every request generates exactly ``--new_tokens`` tokens (``min_new_tokens``), so the work is equal.
The model is a randomly initialised reference-format base directory of ``--preset`` (timing does not
depend on the weights). Also prints the fixed cost of (c) (a one-record run) and where it goes.

    python scripts/bench/bench_inference.py                         # tiny preset, CPU
    python scripts/bench/bench_inference.py --clips 192 --batch_size 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

QUESTIONS = ["Describe the audio.", "What is the loudest sound?", "How many distinct sounds are there?",
             "Is there speech in this clip?"]


def make_clips(folder: Path, n: int, seconds: float) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sr = (16000, 22050, 44100, 48000)[i % 4]
        t = np.arange(int(seconds * sr)) / sr
        wave = 0.2 * np.sin(2 * np.pi * (200 + 10 * i) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:03d}.wav"
        sf.write(str(path), wave.astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(path))
    return paths


def run_infer(args, records_path: Path, out: Path, extra=()) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "fusionaudio.infer", "--json_input", str(records_path), "--json_output", str(out),
           "--base_model", str(args.base_dir), "--device", args.device, "--do_sample", "false",
           "--max_new_tokens", str(args.new_tokens), "--min_new_tokens", str(args.new_tokens),
           "--batch_size", str(args.batch_size), "--no_progress", *extra]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.loader_workers is not None:
        cmd += ["--loader_workers", str(args.loader_workers)]
    t0, c0 = time.perf_counter(), _child_cpu()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    args.cpu_s = _child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"fusionaudio.infer failed:\n{proc.stderr[-3000:]}")
    return elapsed


def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fixed_costs(base_dir: Path) -> dict:
    """Seconds of the parts of a run's fixed cost, measured in a fresh process each."""
    code = (
        "import time, sys; t0 = time.perf_counter();"
        "import torch, transformers, peft; t1 = time.perf_counter();"
        "from transformers import LlamaForCausalLM; import fusionaudio.gama.modeling; t2 = time.perf_counter();"
        "from fusionaudio.gama.loading import load_model; load_model(sys.argv[1]); t3 = time.perf_counter();"
        "print(t1 - t0, t2 - t1, t3 - t2)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(base_dir)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    a, b, c = map(float, out.stdout.split())
    return {"import torch+transformers+peft": a, "import model classes": b, "load_model": c}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="(b)/(c) dtype (default float32 on CPU, bfloat16 on GPU)")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--loader_workers", type=int, default=None)
    ap.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    args = ap.parse_args()
    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.inference import FusionAudioInference, Request
    from fusionaudio.gama.tiny import make_reference_base_dir

    device = torch.device(args.device)
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args.base_dir = make_reference_base_dir(tmp / "base", args.preset, seed=0, llm_init_std=0.2)
        paths = make_clips(tmp, args.clips, args.seconds)
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(len(paths))]
        records = [{"audio_id": p, "instruction": q} for p, q in zip(paths, questions)]
        (tmp / "records.json").write_text(json.dumps(records))
        gen = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        n, tokens = len(paths), len(paths) * args.new_tokens
        res, cpu = {}, {}
        if "a" not in skip:
            ref = FusionAudioInference(args.base_dir, device=device, dtype="float32", attention="eager")
            ref.generate([Request("warm up", torch.zeros(1024, 128))], max_new_tokens=2, do_sample=False)
            t0, c0 = time.perf_counter(), time.process_time()
            for path, q in zip(paths, questions):
                ref.generate([Request(q, load_fbank(path))], batch_size=1, **gen)  # per file, CPU fbank
            res["a"], cpu["a"] = time.perf_counter() - t0, time.process_time() - c0
            del ref
        if "b" not in skip:
            dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
            eng = FusionAudioInference(args.base_dir, device=device, dtype=dtype)
            eng.generate([Request("warm up", torch.zeros(1024, 128))], max_new_tokens=2, do_sample=False)
            t0, c0 = time.perf_counter(), time.process_time()
            eng.predict_batch(paths, questions, batch_size=args.batch_size, **gen)
            res["b"], cpu["b"] = time.perf_counter() - t0, time.process_time() - c0
            del eng
        if "c" not in skip:
            res["c"] = run_infer(args, tmp / "records.json", tmp / "out" / "preds.json")
            cpu["c"] = args.cpu_s
            one = tmp / "one.json"
            one.write_text(json.dumps(records[:1]))
            saved = args.new_tokens
            args.new_tokens = 1
            res["c_fixed"] = run_infer(args, one, tmp / "out1" / "preds.json")
            args.new_tokens = saved
            costs = fixed_costs(args.base_dir)

    print("load average:", " ".join(f"{x:.1f}" for x in os.getloadavg()), f"on {os.cpu_count()} cores")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"preset={args.preset} device={name} clips={n} x {args.seconds:.0f}s (16/22.05/44.1/48 kHz) "
          f"new_tokens/clip={args.new_tokens} batch={args.batch_size}")
    labels = {"a": "(a) reference-style loop (batch 1, fp32, CPU fbank per file)",
              "b": f"(b) batched API (predict_batch, batch {args.batch_size})",
              "c": f"(c) python -m fusionaudio.infer end to end (batch {args.batch_size})"}
    for key, label in labels.items():
        if key in res:
            print(f"{label:66} {res[key]:8.2f} s {n / res[key]:8.2f} clips/s {tokens / res[key]:9.1f} new tok/s"
                  f"  (CPU {cpu[key]:.1f} s)")
    if "a" in res:
        for key in ("b", "c"):
            if key in res:
                print(f"speed-up {key}/a: {res['a'] / res[key]:.2f}x wall, {cpu['a'] / cpu[key]:.2f}x CPU time")
    if "c" in res:
        print(f"(c) fixed cost (a one-record run, 1 new token, own process): {res['c_fixed']:.2f} s; of it, in a "
              "fresh process: " + ", ".join(f"{k} {v:.2f} s" for k, v in costs.items()))


if __name__ == "__main__":
    main()
