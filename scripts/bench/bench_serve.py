#!/usr/bin/env python3
"""Load test of ``fusionaudio serve``: N concurrent clients vs the same requests one at a time.

    python scripts/bench/bench_serve.py                      # starts a server (bundled demo model)
    python scripts/bench/bench_serve.py --clients 8 --requests 64 --max_tokens 48
    python scripts/bench/bench_serve.py --url http://127.0.0.1:8000 --model NAME [--api_key KEY]

Each request is a chat completion with one clip (the bundled clip and synthetic tones, several
questions). The same request list is sent sequentially, then by ``--clients`` threads. Prints
requests/s, p50/p95 latency, errors, the largest batch the server formed, and the ratio of the
concurrent throughput to the sequential one. Greedy by default (``--temperature 0``).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from fusionaudio.serve.process import ServerProcess  # noqa: E402

QUESTIONS = ["Describe the audio.", "What is the main sound?", "How many sounds are there?", "What do you hear?"]


def clips() -> list[bytes]:
    out = [(REPO / "data" / "example" / "demo_clip.wav").read_bytes()]
    for seconds, freq in ((2.0, 440.0), (4.0, 1500.0), (1.0, 250.0)):
        t = np.arange(int(seconds * 16000)) / 16000
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
        out.append(buf.getvalue())
    return out


def bodies(n: int, model: str, max_tokens: int, temperature: float, questions: list[str]) -> list[dict]:
    audio = [base64.b64encode(c).decode() for c in clips()]
    return [{"model": model, "temperature": temperature, "max_tokens": max_tokens,
             "messages": [{"role": "user", "content": [
                 {"type": "text", "text": questions[i % len(questions)]},
                 {"type": "input_audio", "input_audio": {"data": audio[i % len(audio)], "format": "wav"}}]}]}
            for i in range(n)]


def run(url: str, reqs: list[dict], clients: int, headers: dict) -> dict:
    latencies, errors = [], []

    def one(http: httpx.Client, body: dict):
        start = time.perf_counter()
        try:
            r = http.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=600)
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                return
            r.json()["choices"][0]["message"]["content"]
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        latencies.append(time.perf_counter() - start)

    def worker(k: int):
        with httpx.Client() as http:
            for body in reqs[k::clients]:
                one(http, body)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - start
    lat = sorted(latencies) or [float("nan")]
    return {"rps": len(latencies) / wall, "p50": statistics.median(lat),
            "p95": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], "errors": len(errors),
            "wall": wall, "first_error": errors[0] if errors else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="an already running server (default: start one with the bundled demo model)")
    p.add_argument("--model", default="fusionaudio-demo")
    p.add_argument("--api_key", default=None)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max_tokens", type=int, default=128, help="the demo model's answers end by ~70 tokens")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--question", default=None, help="ask only this (default: a mix of four questions)")
    p.add_argument("--max_batch_size", type=int, default=8, help="for the server this script starts")
    p.add_argument("--max_wait_ms", type=float, default=50.0, help="for the server this script starts")
    p.add_argument("--min_wait_ms", type=float, default=20.0, help="for the server this script starts")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server this script starts")
    args = p.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = None
    url = args.url
    if url is None:
        server = ServerProcess("serve", ["--max_batch_size", str(args.max_batch_size),
                                         "--max_wait_ms", str(args.max_wait_ms), "--min_wait_ms", str(args.min_wait_ms)]
                               + (["--threads", str(args.threads)] if args.threads else []))
        url = server.start()
    try:
        reqs = bodies(args.requests, args.model, args.max_tokens, args.temperature,
                      [args.question] if args.question else QUESTIONS)
        run(url, reqs[:2], 1, headers)  # warm-up
        seq = run(url, reqs, 1, headers)
        before = httpx.get(f"{url}/health").json().get("batching", {})
        conc = run(url, reqs, args.clients, headers)
        batching = httpx.get(f"{url}/health").json().get("batching", {})
    finally:
        if server is not None:
            server.stop()
    print(f"{args.requests} requests ({'one question' if args.question else 'four questions'} x 4 clips), max_tokens {args.max_tokens}, temperature {args.temperature}, "
          f"server threads {args.threads or 'default'}, {url}")
    for name, r in (("sequential (1 client)", seq), (f"concurrent ({args.clients} clients)", conc)):
        print(f"{name:24s} {r['rps']:7.2f} req/s  p50 {r['p50'] * 1000:7.0f} ms  p95 {r['p95'] * 1000:7.0f} ms  "
              f"errors {r['errors']}  wall {r['wall']:.1f} s")
        if r["first_error"]:
            print(f"  first error: {r['first_error']}")
    if batching:
        n = batching["requests"] - before["requests"]
        mean = n / max(1, batching["batches"] - before["batches"])
        print(f"concurrent phase: mean batch {mean:.1f}, largest batch {batching['largest_batch']} "
              f"(max_batch_size {batching['max_batch_size']}, max_wait_ms {batching['max_wait_ms']:g}, "
              f"min_wait_ms {batching.get('min_wait_ms', 0):g})")
    print(f"throughput ratio concurrent/sequential: {conc['rps'] / seq['rps']:.2f}x")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average at the end {os.getloadavg()[0]:.1f}")
    return 1 if seq["errors"] or conc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
