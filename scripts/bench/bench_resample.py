"""Seconds and peak memory of the front end (decode + sinc resample + fbank) at odd sample rates.

Each rate runs in its own process so that its peak RSS is its own:

    python scripts/bench/bench_resample.py [--seconds 1] [--rates 44101 11127 192000 44100 22050]

Prints, per rate: the reduced ratio, which sinc path ran (dense = the reference's conv1d,
bit-identical; banded = the same kernel values as a band), seconds for ``load_fbank`` (first call,
kernel built; then a second call, kernel cached) and the process's peak RSS over its RSS after
imports. A rate outside the accepted range is shown as refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, math, resource, sys, tempfile, time
import numpy as np, soundfile as sf
from fusionaudio import audio
from fusionaudio.audio import sinc
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.NamedTemporaryFile(suffix=".wav") as f:
    lying = rate > 768_000  # a header that lies: 32 KB of samples, the rate patched in
    n = 8192 if lying else int(rate * seconds)
    x = (0.3 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    sf.write(f.name, x, 16000 if lying else rate, subtype="FLOAT")
    if lying:
        with open(f.name, "r+b") as h:
            h.seek(24); h.write(rate.to_bytes(4, "little")); h.write((4 * rate % 2**32).to_bytes(4, "little"))
    base = rss_mb()
    g = math.gcd(rate, audio.TARGET_SAMPLE_RATE)
    orig, new = rate // g, audio.TARGET_SAMPLE_RATE // g
    _, width = sinc._sinc_width(orig, new)
    path = "dense" if new * (2 * width + orig) <= sinc._DENSE_KERNEL_ELEMENTS else "banded"
    out = {"rate": rate, "ratio": f"{orig}->{new}", "path": path if rate != 16000 else "none"}
    try:
        t0 = time.perf_counter(); audio.load_fbank(f.name); t1 = time.perf_counter()
        audio.load_fbank(f.name); t2 = time.perf_counter()
        out.update(first_s=t1 - t0, cached_s=t2 - t1, peak_rss_over_base_mb=rss_mb() - base)
    except audio.AudioError as exc:
        out.update(refused=str(exc))
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rates", type=int, nargs="+", default=[44101, 11127, 192000, 44100, 22050, 2_147_483_647])
    args = ap.parse_args()
    print(f"{'rate':>12} {'ratio':>16} {'path':>7} {'first s':>8} {'cached s':>9} {'peak RSS MB':>12}")
    for rate in args.rates:
        res = subprocess.run([sys.executable, "-c", CHILD, str(rate), str(args.seconds)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if "refused" in r:
            print(f"{rate:>12} {r['ratio']:>16} refused: {r['refused']}")
            continue
        print(f"{rate:>12} {r['ratio']:>16} {r['path']:>7} {r['first_s']:>8.3f} {r['cached_s']:>9.3f} "
              f"{r['peak_rss_over_base_mb']:>12.1f}")


if __name__ == "__main__":
    main()
