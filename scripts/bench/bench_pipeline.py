"""Throughput of the caption pipeline, per stage and end to end, under the local and the Ray engine (CPU).

    python scripts/bench/bench_pipeline.py [--clips 8] [--engines local ray] [--ray_cpus 2] [--out runs/bench_pipeline]

Clips are the synthetic example clips (speech, melody, a video), repeated with distinct ids.
Models: the TINY RANDOM models of each stage's class plus the bundled FusionAudio demo model, so the
figures measure the pipeline's overhead and tiny-model compute on this machine, not real models.
The LLM stages use the tiny local Llama (``--llm local``) or an OpenAI-compatible fake on 127.0.0.1
that answers at once (``--llm fake``; isolates the pipeline from LLM compute).

Per stage: clips/s = clips computed / the stage's compute seconds (the batch time, summed; model
loading excluded). End to end: clips / wall time of the whole run (model loading and, for Ray,
cluster and actor start-up included).
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the fake OpenAI-compatible server
sys.path.insert(0, str(REPO / "src"))

from fusionaudio.pipeline import synthetic  # noqa: E402
from fusionaudio.pipeline.config import STAGE_ORDER, load_config  # noqa: E402
from fusionaudio.pipeline.run import run_pipeline  # noqa: E402


def clip_list(root: Path, n: int) -> Path:
    src = synthetic.make_example_clips(root / "media")
    rows = [r.split(",") for r in src.read_text().splitlines()[1:]]
    out = ["id,path,start,end"]
    for k in range(n):
        cid, path, start, end = rows[k % len(rows)]
        out.append(f"{cid}_{k:04d},{root / 'media' / path},{start},{end}")
    (root / "clips.csv").write_text("\n".join(out) + "\n")
    return root / "clips.csv"


def stage_rates(output_dir: Path) -> dict:
    rates = {}
    for name in STAGE_ORDER:
        files = list((output_dir / "work" / "results" / name).glob("*.json"))
        recs = [json.loads(f.read_text()) for f in files]
        computed = [r for r in recs if r["status"] in ("ok", "error", "filtered") and r["seconds"] > 0]
        busy = sum(r["seconds"] for r in computed)
        rates[name] = (len(computed), busy, len(computed) / busy if busy else None)
    return rates


def run(engine: str, csv: Path, out: Path, tiny: Path, llm: dict, ray_cpus: int, threads) -> tuple[float, dict]:
    import yaml

    llm_stages = {"fusion": {**llm, "max_tokens": 24}, "qa": {**llm, "max_tokens": 48, "parse_retries": 0}}
    cfg = {"input": str(csv), "output_dir": str(out), "tiny_models_dir": str(tiny), "engine": engine,
           "torch_threads": threads, "ray": {"num_cpus": ray_cpus},
           "stages": {"asr": {"max_new_tokens": 16}, "audio_caption": {"max_new_tokens": 24},
                      "music_caption": {"max_new_tokens": 24, "min_tag_score": 0.0},
                      "visual_caption": {"max_new_tokens": 12}, "clap_filter": {"threshold": -1.0}, **llm_stages}}
    path = out.parent / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    run_pipeline(load_config(path))
    return time.perf_counter() - t0, stage_rates(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    p.add_argument("--ray_cpus", type=int, default=2)
    p.add_argument("--llm", choices=["local", "fake"], default="local")
    p.add_argument("--torch_threads", type=int, default=None, help="the config's torch_threads (default: torch's)")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_pipeline_"))
    root.mkdir(parents=True, exist_ok=True)
    csv, tiny = clip_list(root, args.clips), root / "tiny_models"
    server = None
    if args.llm == "fake":
        from pipeline_helpers import FakeChatServer

        server = FakeChatServer().__enter__()
        llm = {"backend": "openai", "base_url": server.base_url, "model": "fake", "max_retries": 0}
    else:
        llm = {"backend": "local", "model": "tiny"}
    try:
        results = {}
        for engine in args.engines:
            shutil.rmtree(root / engine, ignore_errors=True)
            results[engine] = run(engine, csv, root / engine, tiny, llm, args.ray_cpus, args.torch_threads)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    print(f"{args.clips} clips, tiny random models (+ the bundled FusionAudio demo model), CPU, LLM: {args.llm}, "
          f"torch_threads: {args.torch_threads or 'default'}")
    print(f"{'stage':<15}" + "".join(f" {e + ' clips/s':>16}" for e in results))
    for name in STAGE_ORDER:
        cells = []
        for engine, (_, rates) in results.items():
            n, busy, rate = rates[name]
            cells.append(f"{rate:>9.2f} ({n:>3d})" if rate else f"{'-':>15}")
        print(f"{name:<15}" + "".join(f" {c:>16}" for c in cells))
    print(f"{'end to end':<15}" + "".join(f" {args.clips / wall:>9.3f} ({wall:>5.0f}s)" for wall, _ in results.values()))
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
