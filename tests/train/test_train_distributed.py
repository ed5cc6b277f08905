"""Two CPU processes (torchrun, gloo, accelerate's DDP) train in lock-step and match one
process with the same global batch, with and without gradient accumulation; the data
mixes text-only and audio micro-batches, so some steps have one rank without audio
(DDP's unused parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusionaudio.gama.config import GamaConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny base without dropout (so one and two processes see the same computation) and
    4 clips + 4 text-only records + 1 record whose clip is too short (skipped up front)."""
    from fusionaudio.demo.scenes import generate
    from fusionaudio.gama.tiny import make_reference_base_dir

    root = tmp_path_factory.mktemp("dist")
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = GamaConfig.from_name("tiny", qformer=no_dropout, aggregator=no_dropout)
    base = make_reference_base_dir(root / "base", config, seed=0, weights="safetensors", num_shards=1)
    generate(root / "data", n_train=4, n_test=0, seed=5)
    records = json.loads((root / "data" / "train.json").read_text())
    records += [{"audio_id": "empty", "instruction": f"Count to {i}.", "input": "", "output": f"{i}."} for i in range(4)]
    import numpy as np
    import soundfile as sf

    sf.write(str(root / "data" / "short.wav"), np.zeros(100, dtype=np.float32), 16000)  # < one 25 ms frame
    records.append({"audio_id": "short.wav", "instruction": "Describe.", "input": "", "output": "Nothing."})
    (root / "data" / "mixed.json").write_text(json.dumps(records))
    return root, base


ARGS = dict(micro_batch_size=2, max_steps=3, learning_rate=2e-3, lora_dropout=0.0, val_set_size=3,
            warmup_steps=0, save_steps=0, eval_steps=3, logging_steps=0, seed=0, progress=False,
            trainable_params="qformer_all", cache_fbank=True, skip_bad_records=True)


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("batch_size", [4, 8], ids=["no_accumulation", "accumulation_2"])
def test_two_processes_agree_and_match_one(setup, batch_size):
    root, base = setup
    args = {**ARGS, "batch_size": batch_size}
    two, one = root / f"two_{batch_size}", root / f"one_{batch_size}"
    cli = [f"--{k}={v}" for k, v in args.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fusionaudio.train", f"--base_model={base}", f"--data_path={root / 'data' / 'mixed.json'}",
           f"--output_dir={two}", "--device=cpu", *cli]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["engine"] == "MULTI_CPU" and summary["world_size"] == 2
    assert json.loads((two / "training_args.json").read_text())["gradient_accumulation_steps"] == batch_size // 4
    assert "short.wav" in (two / "skipped_audio.txt").read_text()  # found by one rank, known to both
    sums = summary["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # identical trained weights on both ranks

    from fusionaudio.train import train

    train(base_model=str(base), data_path=str(root / "data" / "mixed.json"), output_dir=str(one),
          device="cpu", **args)  # 1 process, twice the accumulation: the same global batch
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-5)
    evals = [json.loads((d / "train_summary.json").read_text())["eval_loss"] for d in (one, two)]
    assert evals[0] == pytest.approx(evals[1], abs=1e-5)  # the validation loss, split over 2 ranks
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (one, two))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_the_runs_have_steps_with_one_rank_text_only(setup):
    """The runs above include micro-batches where one rank has text only and the other has
    audio (the case DDP needs find_unused_parameters for): the trainer's own plan, rebuilt."""
    from fusionaudio.gama.collate import plan_micro_batches
    from fusionaudio.gama.data import select_records
    from fusionaudio.gama.loading import load_tokenizer
    from fusionaudio.train.batches import split_examples
    from fusionaudio.train.loop import rank_plan

    root, base = setup
    data = root / "data" / "mixed.json"
    records, _ = select_records(data)
    train_ex, _ = split_examples(load_tokenizer(base), records, data, 256, True, "alpaca_short",
                                 ARGS["val_set_size"], ARGS["seed"])
    train_ex = [e for e in train_ex if e.audio is None or e.audio.name != "short.wav"]
    plan = plan_micro_batches(train_ex, ARGS["micro_batch_size"], ARGS["seed"], 0)
    for accum in (1, 2):
        ranks = [rank_plan(plan, r, 2, accum)[: ARGS["max_steps"] * accum] for r in range(2)]
        kinds = [[train_ex[mb[0]].has_audio for mb in rank] for rank in ranks]
        assert any(a != b for a, b in zip(*kinds)), (accum, kinds)
