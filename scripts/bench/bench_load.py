"""Full-size loading on CPU, measured (issue 8 section 5; quantized: issue 25).

GAMA: writes a Llama-2-7b-shaped base directory in the reference format (random bf16 weights under
exactly ``manifest_base_7b``'s names and shapes, sharded ``pytorch_model-0000N-of-0000M.bin`` + index, a
tokenizer of 32000 pieces) and a fine-tuned ``.pth`` with ``manifest_peft_7b``'s filtered keys, then, in a
fresh process per ``--quantize`` method, ``load_model(..., dtype=bfloat16, quantize=...)`` and answers one
clip with 8 new tokens (greedy). Prints load seconds, peak RSS against the weight bytes, seconds to the first
new token (audio, prompt and the first step) and per later token, then a table over the methods with ratios
to the first; with int8/nf4, also the kernels' weight-streaming rates (batch-1 matmul over a 0.27 GB bf16
weight: ``F.linear`` in bf16, bitsandbytes' int8 and NF4 layers, torch's int8 weight-only kernel); then
deletes the files (``--keep`` keeps them).

    nice -n 10 python scripts/bench/bench_load.py gama [--size 7b|small] [--quantize none,int8,nf4] [--workdir DIR]
    python scripts/bench/bench_load.py kernels

AudSemThinker: builds the 7B thinker on the meta device from the released config values (no weights)
and prints its parameter count and key coverage against the released layout.

    python scripts/bench/bench_load.py audsem
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
MANIFESTS = REPO / "tests" / "data" / "reference"
TRAINED = ("lora", "audio", "qformer", "Qformer", "query_tokens")


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM, the high-water mark of its own memory map (``ru_maxrss`` would also
    count the parent's peak, which Linux carries over the fork and exec of ``_measure``)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _tensor(entry: dict, gen: torch.Generator) -> torch.Tensor:
    shape = entry["shape"]
    if entry["dtype"] == "int64":
        return torch.arange(shape[-1]).expand(*shape).clone()
    if entry["name"].endswith("inv_freq"):
        dim = shape[0] * 2
        return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(torch.bfloat16)


def write_base(out: Path, manifest: dict, num_shards: int) -> int:
    """The reference base directory, one shard in memory at a time; returns the weight bytes."""
    from fusionaudio.gama.tiny import train_tokenizer

    config = manifest["config"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}, indent=2))
    train_tokenizer(out, vocab_size=int(config["vocab_size"]))
    entries = sorted(manifest["entries"], key=lambda e: e["name"])
    sizes = [torch.Size(e["shape"]).numel() for e in entries]
    per_shard, weight_map, total, gen = sum(sizes) / num_shards, {}, 0, torch.Generator().manual_seed(0)
    shard, acc, index = {}, 0, 1
    for entry, size in zip(entries, sizes):
        shard[entry["name"]] = _tensor(entry, gen)
        total += shard[entry["name"]].numel() * shard[entry["name"]].element_size()
        acc += size
        if acc >= per_shard * index or entry is entries[-1]:
            name = f"pytorch_model-{index:05d}-of-{num_shards:05d}.bin"
            torch.save(shard, out / name)
            weight_map.update({k: name for k in shard})
            shard, index = {}, index + 1
            gc.collect()
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    return total


def write_finetuned(path: Path, manifest: dict) -> None:
    gen = torch.Generator().manual_seed(1)
    entries = [e for e in manifest["entries"] if any(s in e["name"] for s in TRAINED)]
    torch.save({e["name"]: _tensor(e, gen) for e in entries}, path)


class _TokenClock:
    """A logits processor that only notes when each new token's scores arrive."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def measure_load(work: Path, new_tokens: int, quantize: str = "none") -> None:
    """In a fresh process: load_model(bf16, quantize) + one clip with ``new_tokens`` greedy tokens."""
    from transformers import GenerationConfig, LogitsProcessorList

    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.loading import load_model
    from fusionaudio.gama.prompts import build_prompt

    weight_bytes = json.loads((work / "base" / "pytorch_model.bin.index.json").read_text())["metadata"]["total_size"]
    rss_before = peak_rss_bytes()
    t = time.perf_counter()
    model, tok = load_model(work / "base", work / "finetuned.pth", dtype=torch.bfloat16, quantize=quantize)
    load_s = time.perf_counter() - t
    rss_load = peak_rss_bytes()
    rss_now = current_rss_bytes()
    n_params = sum(p.numel() for p in model.parameters())
    fbank = load_fbank(REPO / "data" / "example" / "demo_clip.wav")[None].to(torch.bfloat16)
    enc = tok([build_prompt("Describe the audio.")], return_tensors="pt", padding=True)
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    clock = _TokenClock()
    t = time.perf_counter()
    with torch.no_grad():
        new = model.generate(enc.input_ids, enc.attention_mask, fbank, generation_config=config,
                             logits_processor=LogitsProcessorList([clock]))
    gen_s = time.perf_counter() - t
    first_s = clock.times[0] - t
    per_token_s = (clock.times[-1] - clock.times[0]) / max(len(clock.times) - 1, 1)
    peak = peak_rss_bytes()
    print(f"[{quantize}] parameters: {n_params / 1e9:.3f} B; weight bytes (bf16 files): {weight_bytes / 1e9:.2f} GB")
    print(f"[{quantize}] load_model(dtype=bfloat16, quantize={quantize!r}): {load_s:.1f} s")
    print(f"[{quantize}] peak RSS: at start {rss_before / 1e9:.2f} GB, after loading {rss_load / 1e9:.2f} GB (RSS then "
          f"{rss_now / 1e9:.2f} GB), after generating {peak / 1e9:.2f} GB = {peak / weight_bytes:.2f}x the weight bytes")
    print(f"[{quantize}] generate: {new.shape[1]} new tokens in {gen_s:.1f} s; first token {first_s:.2f} s "
          f"(audio + prompt + 1 step), then {per_token_s:.3f} s per token")
    print("RESULT " + json.dumps({"quantize": quantize, "load_s": load_s, "peak_rss": peak, "rss_load": rss_load,
                                  "weight_bytes": weight_bytes, "first_token_s": first_s,
                                  "per_token_s": per_token_s, "new_tokens": int(new.shape[1])}), flush=True)


def _timed(fn, repeats: int = 20) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _call(layer, x):
    return lambda: layer(x)


def _torchao_row(w: torch.Tensor, x: torch.Tensor) -> list:
    """torchao's Int8WeightOnlyConfig on the same weight, when torchao is importable (not a dependency)."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return []
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.bfloat16)
    layer.weight.data.copy_(w)
    quantize_(layer, Int8WeightOnlyConfig())
    import torchao

    return [(f"torchao {torchao.__version__} Int8WeightOnlyConfig (eager)", _timed(_call(layer, x), 5), w.numel())]


def kernel_rates(out_features: int = 32768, in_features: int = 4096) -> None:
    """Batch-1 matmul over one [out, in] weight (0.27 GB in bf16) in each format: median seconds and the
    rate at which it streams the weight's bf16 bytes (the format's own bytes in brackets)."""
    import torch.nn.functional as F

    from fusionaudio.loading.quantize import quantized_linear

    torch.manual_seed(0)
    w = (torch.randn(out_features, in_features) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, 1, in_features, dtype=torch.bfloat16)
    bf16_bytes = w.numel() * 2
    with torch.no_grad():
        rows = [("bf16 F.linear", _timed(lambda: F.linear(x, w)), bf16_bytes)]
        for method, nbytes in (("int8", w.numel()), ("nf4", w.numel() // 2)):
            rows.append((f"bitsandbytes {method}", _timed(_call(quantized_linear(w, method, torch.bfloat16, "cpu"), x)),
                         nbytes))
        scale = w.float().abs().amax(1) / 127
        w8 = (w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        x2 = x.reshape(1, in_features)
        rows.append(("torch int8 weight-only (_weight_int8pack_mm)",
                     _timed(lambda: torch._weight_int8pack_mm(x2, w8, scale.to(torch.bfloat16))), w.numel()))
        rows += _torchao_row(w, x)
    base = rows[0][1]
    print(f"kernels, batch 1, weight [{out_features}, {in_features}] ({bf16_bytes / 1e9:.2f} GB in bf16), "
          f"{torch.get_num_threads()} threads:")
    for name, seconds, nbytes in rows:
        print(f"  {name:<46} {seconds * 1e3:7.2f} ms  {bf16_bytes / seconds / 1e9:6.1f} GB/s of bf16 weight "
              f"({nbytes / seconds / 1e9:5.1f} GB/s of its own bytes)  time vs bf16 {seconds / base:.2f}x")


def summarize(results: list[dict]) -> None:
    base = results[0]
    print(f"\nsummary (ratios to {base['quantize']}):")
    print("  method  load s  peak RSS GB  x weights  vs first  first token s  s/token  vs first")
    for r in results:
        print(f"  {r['quantize']:<6} {r['load_s']:7.1f} {r['peak_rss'] / 1e9:12.2f} {r['peak_rss'] / r['weight_bytes']:10.2f}"
              f" {r['peak_rss'] / base['peak_rss']:9.2f} {r['first_token_s']:14.2f} {r['per_token_s']:8.3f}"
              f" {r['per_token_s'] / base['per_token_s']:9.2f}")


def bench_gama(args) -> None:
    import subprocess

    suffix = "_7b" if args.size == "7b" else ""
    base_m = json.loads((MANIFESTS / f"manifest_base{suffix}.json").read_text())
    peft_m = json.loads((MANIFESTS / f"manifest_peft{suffix}.json").read_text())
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="bench_load_", dir=args.workdir))
    try:
        if not args.reuse:
            t = time.perf_counter()
            weight_bytes = write_base(work / "base", base_m, args.num_shards)
            write_finetuned(work / "finetuned.pth", peft_m)
            print(f"size {args.size}: wrote the base directory ({weight_bytes / 1e9:.2f} GB of weights, "
                  f"{args.num_shards} .bin shards) and the checkpoint in {time.perf_counter() - t:.0f} s")
        results = []
        for method in args.quantize.split(","):
            proc = subprocess.run([sys.executable, __file__, "_measure", str(work), "--new_tokens",
                                   str(args.new_tokens), "--quantize", method], check=True, stdout=subprocess.PIPE,
                                  text=True)
            print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT ")), flush=True)
            results += [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        summarize(results)
        if set(args.quantize.split(",")) - {"none"}:
            kernel_rates()
    finally:
        if args.keep or args.reuse:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench_audsem(args) -> None:
    from fusionaudio.audsem.released import released_thinker_coverage

    report = released_thinker_coverage()
    for key, value in report.items():
        print(f"{key}: {value}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["gama", "audsem", "kernels", "_measure"],
                   help="kernels: only the weight-streaming rates of bf16, int8 and nf4 matmuls")
    p.add_argument("work", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--size", choices=["7b", "small"], default="7b",
                   help="7b: manifest_base_7b; small: manifest_base (2 Llama layers, audio side full size)")
    p.add_argument("--num_shards", type=int, default=2)
    p.add_argument("--new_tokens", type=int, default=8)
    p.add_argument("--workdir", default=None, help="where to write the temporary files (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--reuse", default=None, help="a directory kept by --keep: measure it again without writing")
    p.add_argument("--quantize", default="none", help="comma-separated methods, each measured in its own process "
                   "(none = bf16; e.g. none,int8,nf4)")
    args = p.parse_args(argv)
    if args.which == "_measure":
        measure_load(Path(args.work), args.new_tokens, args.quantize)
    elif args.which == "kernels":
        kernel_rates()
    else:
        bench_gama(args) if args.which == "gama" else bench_audsem(args)


if __name__ == "__main__":
    main()
