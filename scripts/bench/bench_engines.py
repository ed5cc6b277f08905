#!/usr/bin/env python3
"""``--engine hf`` vs ``--engine vllm``, measured: generation, ``fusionaudio.infer`` end to end, and the server.

    .venv-vllm/bin/python scripts/bench/bench_engines.py                     # CPU: demo + bench models
    .venv-vllm/bin/python scripts/bench/bench_engines.py --models bench --records 64 --new_tokens 32
    python scripts/bench/bench_engines.py --models 7b --device cuda --dtype bfloat16 --batches 1,16,64 \\
        --hbm_gbs 3350 --clients 64 --serve_requests 256                   # a GPU box (scripts/bench/gpu_acceptance.sh)

Models: ``demo`` (the bundled 1.4 M model), ``bench`` (random weights: Llama hidden 512, 8 layers, 8 heads of
64, vocab 32000; tiny audio side), ``7b`` (a Llama-2-7b-shaped GAMA in the reference layout with random bf16
weights, written by scripts/bench/bench_load.py's writer). For each model:

1. generation in one process, both engines loaded once: per batch size B, B records of clips x a four-question
   mix answered greedily with exactly ``--new_tokens`` tokens (``min_new_tokens`` = ``max_new_tokens``); clips/s,
   new tokens/s, decode ms per step ((t[N tokens] - t[1 token]) / (N - 1)) and, with ``--hbm_gbs``, the HBM
   bound (Llama weight bytes / bandwidth); whether the greedy answers of the engines are identical;
2. ``python -m fusionaudio.infer`` end to end (start-up included) over the same records with each engine;
3. ``fusionaudio serve`` with each engine: the question mix sent sequentially, then by ``--clients`` clients
   (scripts/bench/bench_serve.py's client): requests/s, p50/p95 latency, errors, ratio.

Needs vLLM (the venv of ``make vllm-env`` on CPU). On CPU the vLLM engine gets both cores
(``VLLM_CPU_OMP_THREADS_BIND``, ``VLLM_CPU_NUM_OF_RESERVED_CPU``, unless set). Prints one table and the load average.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUESTIONS = ["Describe the audio.", "What is the main sound?", "How many sounds are there?", "What do you hear?"]
BENCH_LLM = {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
             "num_attention_heads": 8, "num_key_value_heads": 8}


def model_dir(name: str, work: Path) -> Path | None:
    """The base directory of a named benchmark model (None: the bundled demo model)."""
    if name == "demo":
        return None
    if name == "bench":
        from fusionaudio.gama.config import GamaConfig
        from fusionaudio.gama.tiny import make_reference_base_dir

        return make_reference_base_dir(work / "bench", GamaConfig.from_name("tiny", llm=BENCH_LLM), seed=0,
                                       weights="safetensors")
    if name == "7b":
        from bench_load import MANIFESTS, write_base

        write_base(work / "7b", json.loads((MANIFESTS / "manifest_base_7b.json").read_text()), num_shards=4)
        return work / "7b"
    raise SystemExit(f"unknown model {name!r}: demo, bench or 7b")


def write_clips(work: Path, n: int) -> list[Path]:
    import numpy as np
    import soundfile as sf

    clips = [REPO / "data" / "example" / "demo_clip.wav"]
    for k in range(1, n):
        t = np.arange(int((1.0 + k % 4) * 16000)) / 16000
        sf.write(str(work / f"tone{k}.wav"), (0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t)).astype(np.float32), 16000)
        clips.append(work / f"tone{k}.wav")
    return clips


def records(clips: list[Path], n: int) -> list[dict]:
    return [{"audio_id": str(clips[i % len(clips)]), "instruction": QUESTIONS[i % len(QUESTIONS)]} for i in range(n)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def generation(args, base, recs) -> list[dict]:
    """Step 1: both engines in this process; per batch size, the same requests through each."""
    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.inference import Request
    from fusionaudio.inference import create_inference

    # on a GPU the HF model holds its weights beside vLLM's: vLLM gets a share of the memory, not its 0.9
    options = {"vllm_args": {"gpu_memory_utilization": 0.6}} if args.device.startswith("cuda") else {}
    engines = {"hf": create_inference("gama", base, device=args.device, dtype=args.dtype),
               "vllm": create_inference("gama", base, device=args.device, dtype=args.dtype, engine="vllm",
                                        engine_options=options)}
    weight_bytes = llama_weight_bytes(engines["vllm"].llama_dir)
    fbanks = {}
    rows = []
    for b in args.batch_list:
        reqs = []
        for r in recs[:b]:
            fbanks.setdefault(r["audio_id"], load_fbank(r["audio_id"]))
            reqs.append(Request(r["instruction"], fbanks[r["audio_id"]]))
        answers = {}
        for name, engine in engines.items():
            def run(n, engine=engine):
                return engine.generate(reqs, batch_size=b, do_sample=False, max_new_tokens=n, min_new_tokens=n)

            run(2)  # warm-up
            t1, _ = timed(lambda: run(1))
            tn, answers[name] = timed(lambda: run(args.new_tokens))
            step = (tn - t1) / max(1, args.new_tokens - 1)
            rows.append({"part": "generate", "engine": name, "batch": b, "clips_s": b / tn,
                         "tok_s": b * args.new_tokens / tn, "ms_step": 1000 * step,
                         "hbm_ms": (1000 * weight_bytes / (args.hbm_gbs * 1e9)) if args.hbm_gbs else None})
        same = sum(a == v for a, v in zip(answers["hf"], answers["vllm"]))
        rows[-1]["identical"] = rows[-2]["identical"] = f"{same}/{b}"
    engines["vllm"].close()
    return rows


def llama_weight_bytes(llama_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(llama_dir / "model.safetensors"), "pt") as f:
        for key in f.keys():
            s = f.get_slice(key)
            n = 1
            for d in s.get_shape():
                n *= d
            total += n * {"F32": 4, "BF16": 2, "F16": 2}.get(s.get_dtype(), 4)
    return total


def infer_runs(args, base, recs, work: Path) -> list[dict]:
    """Step 2: ``python -m fusionaudio.infer`` with each engine (a fresh process each; start-up included)."""
    work.mkdir(parents=True, exist_ok=True)  # one folder per model: a run's outputs are bound to its settings
    path = work / "records.json"
    path.write_text(json.dumps(recs))
    rows, outputs = [], {}
    for name in ("hf", "vllm"):
        out = work / f"infer_{name}.json"
        cmd = [sys.executable, "-m", "fusionaudio.infer", "--json_input", str(path), "--json_output", str(out),
               "--greedy", "--max_new_tokens", str(args.new_tokens), "--min_new_tokens", str(args.new_tokens),
               "--batch_size", str(max(args.batch_list)), "--device", args.device, "--no_progress",
               "--engine", name] + (["--base_model", str(base)] if base else []) + ["--dtype", args.dtype]
        wall, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True))
        if proc.returncode != 0:
            raise SystemExit(f"infer --engine {name} failed:\n{proc.stderr[-3000:]}")
        outputs[name] = [r["prediction"] for r in json.loads(out.read_text())]
        rows.append({"part": "infer (CLI, start-up incl.)", "engine": name, "batch": len(recs),
                     "clips_s": len(recs) / wall, "tok_s": len(recs) * args.new_tokens / wall, "wall_s": wall})
    same = sum(a == b for a, b in zip(outputs["hf"], outputs["vllm"]))
    rows[0]["identical"] = rows[1]["identical"] = f"{same}/{len(recs)}"
    return rows


def serve_runs(args, base, name: str) -> list[dict]:
    """Step 3: the server with each engine, sequential vs ``--clients`` clients, the question mix."""
    import httpx
    from bench_serve import bodies, run

    from fusionaudio.serve.process import ServerProcess

    model = Path(base).name if base else "fusionaudio-demo"
    rows = []
    for engine in ("hf", "vllm"):
        server_args = ["--engine", engine, "--max_batch_size", str(args.clients), "--max_tokens", "1024",
                       "--device", args.device] + (["--base_model", str(base)] if base else []) + ["--dtype", args.dtype]
        with ServerProcess("serve", server_args, timeout=900) as url:
            reqs = bodies(args.serve_requests, model, args.serve_tokens, 0.0, QUESTIONS)
            run(url, reqs[:2], 1, {})  # warm-up
            seq = run(url, reqs, 1, {})
            conc = run(url, reqs, args.clients, {})
            largest = httpx.get(f"{url}/health").json()["batching"].get("largest_batch")
        for label, r in (("serve sequential", seq), (f"serve {args.clients} clients", conc)):
            rows.append({"part": label, "engine": engine, "batch": largest if r is conc else 1, "clips_s": r["rps"],
                         "p50_ms": 1000 * r["p50"], "p95_ms": 1000 * r["p95"], "errors": r["errors"]})
        rows[-1]["ratio"] = conc["rps"] / seq["rps"]
    return rows


def fmt(v, spec=".2f") -> str:
    return "-" if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def print_table(model: str, rows: list[dict]) -> None:
    cols = [("part", 28, "s"), ("engine", 6, "s"), ("batch", 6, "s"), ("clips_s", 9, ".2f"), ("tok_s", 9, ".1f"),
            ("ms_step", 8, ".1f"), ("hbm_ms", 7, ".2f"), ("p50_ms", 8, ".0f"), ("p95_ms", 8, ".0f"),
            ("errors", 6, "s"), ("ratio", 6, ".2f"), ("identical", 9, "s"), ("wall_s", 7, ".1f")]
    print(f"\n== model: {model}")
    print(" ".join(f"{c:>{w}}" for c, w, _ in cols))
    for r in rows:
        print(" ".join(f"{fmt(r.get(c), spec):>{w}}" for c, w, spec in cols))
    by = {(r["part"], r["engine"], r["batch"]): r for r in rows}
    for (part, engine, batch), r in by.items():
        if engine == "vllm" and (part, "hf", batch) in by and r.get("clips_s") and part != "serve sequential":
            hf = by[(part, "hf", batch)]
            print(f"  vllm/hf {part} batch {batch}: {r['clips_s'] / hf['clips_s']:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="demo,bench", help="comma-separated: demo, bench, 7b")
    p.add_argument("--records", type=int, default=64, help="records for the CLI runs")
    p.add_argument("--batches", default="16", help="batch sizes of the in-process part (comma-separated)")
    p.add_argument("--new_tokens", type=int, default=32, help="new tokens per answer (forced)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--hbm_gbs", type=float, default=None, help="memory bandwidth (GB/s) for the decode bound")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--serve_requests", type=int, default=32)
    p.add_argument("--serve_tokens", type=int, default=64, help="max_tokens of the serve requests")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: generate, infer, serve")
    args = p.parse_args()
    args.batch_list = [int(b) for b in args.batches.split(",")]
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    if args.device == "cpu":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.setdefault("FUSIONAUDIO_CACHE", str(work / "cache"))
        recs = records(write_clips(work, 8), max(args.records, max(args.batch_list)))
        for name in args.models.split(","):
            base = model_dir(name, work)
            rows = []
            if "generate" not in skip:
                rows += generation(args, base, recs)
            if "infer" not in skip:
                rows += infer_runs(args, base, recs[:args.records], work / f"infer-{name}")
            if "serve" not in skip:
                rows += serve_runs(args, base, name)
            print_table(name, rows)
    load = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} CPUs; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1/5/15 min); VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
