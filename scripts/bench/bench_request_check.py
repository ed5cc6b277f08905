#!/usr/bin/env python3
"""What the API's body check (depth, value count, lone surrogates: ``serve.schemas.json_problem``) and the
model-directory size check (``gama.sizes.check_sizes``, tensor headers only) cost on hostile inputs.

Prints seconds per call (best of ``--repeats``) for 16 MB-class request bodies (base64 audio, non-ASCII
text with and without a lone surrogate, a million values) and for the size check of the bundled demo model.

    python scripts/bench/bench_request_check.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fusionaudio.serve.schemas import json_problem

DEMO = Path(__file__).resolve().parents[2] / "src" / "fusionaudio" / "assets" / "demo_model"


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bodies() -> dict:
    def chat(parts):
        return {"model": "m", "messages": [{"role": "user", "content": parts}]}

    return {
        "16 MB base64 audio": chat([{"type": "text", "text": "hi"},
                                    {"type": "input_audio", "input_audio": {"data": "A" * 16_000_000, "format": "wav"}}]),
        "16 MB non-ASCII text": chat([{"type": "text", "text": "h\u00e9" * 8_000_000}]),
        "16 MB non-ASCII text + lone surrogate": chat([{"type": "text", "text": "h\u00e9" * 8_000_000 + "\ud800"}]),
        "1,000,000 values": {"model": "m", "stop": [0] * 1_000_000},
        "nested 30 deep": json.loads('{"a": ' + "[" * 30 + "]" * 30 + "}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, obj in bodies().items():
        verdict = json_problem(obj)
        print(f"{name:40s} {best(lambda: json_problem(obj), args.repeats):8.4f} s  "
              f"{'refused: ' + verdict[0][:60] if verdict else 'accepted'}")
    from fusionaudio.gama.checkpoints import read_config
    from fusionaudio.gama.sizes import check_sizes

    config, layout = read_config(DEMO)
    seconds = best(lambda: check_sizes(config, [DEMO / "model.safetensors"], layout, DEMO), args.repeats)
    print(f"{'size check, demo model (headers only)':40s} {seconds:8.4f} s")


if __name__ == "__main__":
    main()
