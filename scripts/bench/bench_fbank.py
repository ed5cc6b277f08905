"""Throughput of the audio front end: per-clip CPU fbank vs one batched pass (CPU, and CUDA if present).

    python scripts/bench/bench_fbank.py [--clips 32] [--seconds 10] [--rate 16000] [--repeats 3] [--threads N]

Clips are random noise at ``--rate``; with a rate other than 16 kHz every path includes the
reference sinc resampler. Prints clips/s (best of ``--repeats``) for each path.
"""

import argparse
import time

import torch

from fusionaudio import audio


def _prepare(clip: torch.Tensor, rate: int, device) -> torch.Tensor:
    """What waveform_to_fbank feeds the kaldi fbank: 16 kHz, channel 0 minus the mean."""
    wave = audio.resample(clip[None].to(device), rate)
    return wave[0] - wave.mean()


def _best_rate(fn, clips: int, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up (caches, CUDA kernels)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return clips / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    clips = [torch.rand(int(args.seconds * args.rate), generator=gen) - 0.5 for _ in range(args.clips)]
    print(f"{args.clips} clips of {args.seconds:g} s at {args.rate} Hz, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")

    def per_clip():
        return [audio.waveform_to_fbank(c, args.rate) for c in clips]

    def batched(device):
        return audio.fbank_batch([_prepare(c, args.rate, device) for c in clips], device=device)

    rows = [("per-clip waveform_to_fbank, CPU", _best_rate(per_clip, args.clips, args.repeats)),
            ("fbank_batch, CPU", _best_rate(lambda: batched("cpu"), args.clips, args.repeats))]
    if torch.cuda.is_available():
        rows.append(("fbank_batch, CUDA (incl. host->device copy)",
                     _best_rate(lambda: batched("cuda"), args.clips, args.repeats, torch.cuda.synchronize)))
    for name, rate in rows:
        print(f"{name:<45} {rate:10.1f} clips/s")


if __name__ == "__main__":
    main()
