"""Contrastive fine-tuning of a local CLAP (symmetric InfoNCE, ``return_loss=True``) on caption records.

Records are in the training format ``{audio_id, instruction, input, output}`` (``output`` = caption; a
list gives several pairs)::

    python -m fusionaudio.retrieval train --train_json captions.json --model_dir CLAP_DIR \
        --output_dir runs/clap_ft --audio_root DATA_ROOT --epochs 5 --batch_size 32 --lr 1e-5

Batches never hold two captions of the same clip (they would be false negatives).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from fusionaudio.evaluate.records import DEFAULT_REF_KEY, load_records

from fusionaudio.retrieval.clap import ClapDualEncoder
from fusionaudio.retrieval.evaluate import evaluate_retrieval
from fusionaudio.retrieval.pairs import collect_pairs, resolve_audio_paths


def caption_pairs(records: list[dict], path, audio_root: str = "", ref_key: str = DEFAULT_REF_KEY):
    """``[(audio_path, caption)]`` from training records; checks that audio files exist."""
    audio_ids, captions, t2a = collect_pairs(records, path, ref_key)
    paths = resolve_audio_paths(audio_ids, audio_root, path)
    return [(paths[j], cap) for cap, j in zip(captions, t2a)]


def unique_audio_batches(pairs: list[tuple[str, str]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of pair indices in which no clip appears twice.

    Each "round" takes one not-yet-used caption of every clip (shuffled); rounds are cut into batches.
    """
    by_audio: dict[str, list[int]] = {}
    for i, (audio, _) in enumerate(pairs):
        by_audio.setdefault(audio, []).append(i)
    for idx in by_audio.values():
        rng.shuffle(idx)
    batches, rnd = [], 0
    while True:
        round_items = [idx[rnd] for idx in by_audio.values() if len(idx) > rnd]
        if not round_items:
            break
        rng.shuffle(round_items)
        batches += [round_items[s : s + batch_size] for s in range(0, len(round_items), batch_size)]
        rnd += 1
    rng.shuffle(batches)
    return [b for b in batches if len(b) > 1]  # a batch of one has no negatives


def train(
    train_json: str,
    model_dir: str,
    output_dir: str,
    audio_root: str = "",
    ref_key: str = DEFAULT_REF_KEY,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 1e-5,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    max_steps: int | None = None,
    grad_clip: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    val_json: str | None = None,
    log_every: int = 10,
) -> dict:
    """Contrastive fine-tuning of a local CLAP on caption records; saves model + processor to ``output_dir``.

    Learning rate: linear warm-up over ``warmup_steps``, then linear decay to 0. With
    ``val_json``, retrieval metrics on it are logged after every epoch. Returns the training log
    (also written to ``output_dir/train_log.json``).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    enc = ClapDualEncoder(model_dir, device=device)
    model = enc.model
    pairs = caption_pairs(load_records(train_json), train_json, audio_root, ref_key)
    rng = random.Random(seed)
    steps_per_epoch = len(unique_audio_batches(pairs, batch_size, random.Random(seed)))
    if steps_per_epoch == 0:
        raise ValueError(f"{train_json}: need at least two clips to form a contrastive batch")
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup_steps if s < warmup_steps else max(0.0, (total - s) / max(1, total - warmup_steps))
    )
    log = {"train_json": str(train_json), "model_dir": str(model_dir), "n_pairs": len(pairs), "steps": [], "val": []}
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        model.train()
        for batch in unique_audio_batches(pairs, batch_size, rng):
            if step >= total:
                break
            inputs = {**enc.text_inputs([pairs[i][1] for i in batch]), **enc.audio_inputs([pairs[i][0] for i in batch])}
            loss = model(**inputs, return_loss=True).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            step += 1
            log["steps"].append({"step": step, "epoch": epoch, "loss": float(loss.item()), "lr": sched.get_last_lr()[0]})
            if log_every and step % log_every == 0:
                print(f"step {step}/{total} epoch {epoch} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        if val_json:
            res = evaluate_retrieval(val_json, output=str(Path(output_dir) / f"val_epoch{epoch}.json"),
                                     ref_key=ref_key, audio_root=audio_root, encoder=enc)
            log["val"].append({"epoch": epoch, **res["metrics"]})
            print(f"epoch {epoch} validation: {res['metrics']}", flush=True)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    enc.processor.save_pretrained(str(out))
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    return log
