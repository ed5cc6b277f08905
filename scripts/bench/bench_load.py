"""Full-size loading on CPU, measured (issue 8 section 5).

GAMA: writes a Llama-2-7b-shaped base directory in the reference format (random bf16 weights under
exactly ``manifest_base_7b``'s names and shapes, sharded ``pytorch_model-0000N-of-0000M.bin`` + index, a
tokenizer of 32000 pieces) and a fine-tuned ``.pth`` with ``manifest_peft_7b``'s filtered keys, then
``load_model(..., dtype=bfloat16)`` and answers one clip with 8 new tokens (greedy). Prints load seconds,
peak RSS, weight bytes and seconds per new token, then deletes the files (``--keep`` keeps them).

    nice -n 10 python scripts/bench/bench_load.py gama [--size 7b|small] [--workdir DIR]

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


def peak_rss_bytes() -> int:
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


def measure_load(work: Path, new_tokens: int) -> None:
    """In a fresh process: load_model(bf16) + one clip with ``new_tokens`` greedy tokens."""
    from transformers import GenerationConfig

    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.loading import load_model
    from fusionaudio.gama.prompts import build_prompt

    weight_bytes = json.loads((work / "base" / "pytorch_model.bin.index.json").read_text())["metadata"]["total_size"]
    rss_before = peak_rss_bytes()
    t = time.perf_counter()
    model, tok = load_model(work / "base", work / "finetuned.pth", dtype=torch.bfloat16)
    load_s = time.perf_counter() - t
    rss_load = peak_rss_bytes()
    n_params = sum(p.numel() for p in model.parameters())
    fbank = load_fbank(REPO / "data" / "example" / "demo_clip.wav")[None].to(torch.bfloat16)
    enc = tok([build_prompt("Describe the audio.")], return_tensors="pt", padding=True)
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    t = time.perf_counter()
    with torch.no_grad():
        new = model.generate(enc.input_ids, enc.attention_mask, fbank, generation_config=config)
    gen_s = time.perf_counter() - t
    peak = peak_rss_bytes()
    print(f"parameters: {n_params / 1e9:.3f} B; weight bytes (bf16 files): {weight_bytes / 1e9:.2f} GB")
    print(f"load_model(dtype=bfloat16): {load_s:.1f} s")
    print(f"peak RSS: at start {rss_before / 1e9:.2f} GB, after loading {rss_load / 1e9:.2f} GB, after generating "
          f"{peak / 1e9:.2f} GB = {peak / weight_bytes:.2f}x the weight bytes")
    print(f"generate: {new.shape[1]} new tokens in {gen_s:.1f} s = {gen_s / max(new.shape[1], 1):.2f} s per new token")


def bench_gama(args) -> None:
    import subprocess

    suffix = "_7b" if args.size == "7b" else ""
    base_m = json.loads((MANIFESTS / f"manifest_base{suffix}.json").read_text())
    peft_m = json.loads((MANIFESTS / f"manifest_peft{suffix}.json").read_text())
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_load_", dir=args.workdir))
    try:
        t = time.perf_counter()
        weight_bytes = write_base(work / "base", base_m, args.num_shards)
        write_finetuned(work / "finetuned.pth", peft_m)
        print(f"size {args.size}: wrote the base directory ({weight_bytes / 1e9:.2f} GB of weights, "
              f"{args.num_shards} .bin shards) and the checkpoint in {time.perf_counter() - t:.0f} s")
        subprocess.run([sys.executable, __file__, "_measure", str(work), "--new_tokens", str(args.new_tokens)],
                       check=True)
    finally:
        if args.keep:
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
    p.add_argument("which", choices=["gama", "audsem", "_measure"])
    p.add_argument("work", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--size", choices=["7b", "small"], default="7b",
                   help="7b: manifest_base_7b; small: manifest_base (2 Llama layers, audio side full size)")
    p.add_argument("--num_shards", type=int, default=2)
    p.add_argument("--new_tokens", type=int, default=8)
    p.add_argument("--workdir", default=None, help="where to write the temporary files (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.which == "_measure":
        measure_load(Path(args.work), args.new_tokens)
    else:
        bench_gama(args) if args.which == "gama" else bench_audsem(args)


if __name__ == "__main__":
    main()
