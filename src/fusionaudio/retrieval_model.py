"""A dual-encoder (audio, text) retrieval model: CLAP on stock transformers, plus fine-tuning.

Interface (what ``fusionaudio.evaluate.retrieval`` needs from any dual encoder)::

    encoder.encode_text(list_of_str) -> (n, d) L2-normalised float32 array
    encoder.encode_audio(list_of_paths_or_waveforms) -> (m, d) L2-normalised float32 array

``ClapDualEncoder`` loads ``ClapModel`` + ``ClapProcessor`` from a **local directory** only
(``HF_HUB_OFFLINE=1``, ``local_files_only=True``). ``train`` fine-tunes it contrastively
(CLAP's symmetric InfoNCE, ``return_loss=True``) on caption records in the training format
``{audio_id, instruction, input, output}`` (``output`` = caption; a list gives several pairs)::

    python -m fusionaudio.retrieval_model train --train_json captions.json --model_dir CLAP_DIR \
        --output_dir runs/clap_ft --audio_root DATA_ROOT --epochs 5 --batch_size 32 --lr 1e-5
    python -m fusionaudio.retrieval_model evaluate --input test.json --model_dir runs/clap_ft ...

Batches never hold two captions of the same clip (they would be false negatives).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np

from fusionaudio.evaluate.records import DEFAULT_REF_KEY, load_records, run_cli


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_waveform(path: str, sampling_rate: int) -> np.ndarray:
    """Mono float32 waveform of an audio file, resampled (polyphase) to ``sampling_rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise RuntimeError(f"cannot read audio file {path}: {e}") from None
    wav = data.mean(axis=1)
    if sr != sampling_rate:
        g = math.gcd(int(sr), int(sampling_rate))
        wav = resample_poly(wav, sampling_rate // g, sr // g).astype(np.float32)
    return wav


class ClapDualEncoder:
    """CLAP from a local directory (``ClapModel`` + ``ClapProcessor``)."""

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int = 16, model=None, processor=None):
        _offline()
        import torch
        from transformers import ClapModel, ClapProcessor

        if model is None or processor is None:
            if not Path(model_dir).is_dir():
                raise FileNotFoundError(f"CLAP model directory not found: {model_dir} (only local directories are loaded)")
            model = ClapModel.from_pretrained(str(model_dir), local_files_only=True)
            processor = ClapProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self.torch, self.model, self.processor = torch, model.to(device), processor
        self.device, self.batch_size = device, batch_size
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        max_pos = getattr(model.config.text_config, "max_position_embeddings", 514) - 2
        self.max_text_len = int(min(getattr(processor.tokenizer, "model_max_length", max_pos) or max_pos, max_pos))

    # ---------------------------------------------------------------- inputs
    def text_inputs(self, texts: list[str]) -> dict:
        enc = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_len,
                                       return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def audio_inputs(self, audio: list) -> dict:
        waves = [load_waveform(a, self.sampling_rate) if isinstance(a, (str, Path)) else np.asarray(a, np.float32)
                 for a in audio]
        feats = self.processor.feature_extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt")
        return {k: v.to(self.device) for k, v in feats.items() if k in ("input_features", "is_longer")}

    # -------------------------------------------------------------- encoding
    @staticmethod
    def _pooled(out):
        return out if hasattr(out, "dim") else out.pooler_output

    def _run(self, items, fn) -> np.ndarray:
        self.model.eval()
        chunks = []
        with self.torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                emb = self._pooled(fn(items[start : start + self.batch_size]))
                chunks.append(self.torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings."""
        return self._run(list(texts), lambda b: self.model.get_text_features(**self.text_inputs(b)))

    def encode_audio(self, audio: list) -> np.ndarray:
        """L2-normalised audio embeddings for file paths or 1-D waveforms at ``sampling_rate``."""
        np.random.seed(0)  # the feature extractor's random truncation, when configured
        return self._run(list(audio), lambda b: self.model.get_audio_features(**self.audio_inputs(b)))


# ------------------------------------------------------------------------ training
def caption_pairs(records: list[dict], path, audio_root: str = "", ref_key: str = DEFAULT_REF_KEY):
    """``[(audio_path, caption)]`` from training records; checks that audio files exist."""
    from fusionaudio.evaluate.retrieval import collect_pairs, resolve_audio_paths

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
            from fusionaudio.evaluate.retrieval import evaluate_retrieval

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


def evaluate(input: str, model_dir: str, output: str | None = None, audio_root: str = "", ref_key: str = DEFAULT_REF_KEY,
             batch_size: int = 16, device: str = "cpu") -> dict:
    """Retrieval metrics of a CLAP directory on caption records (see ``fusionaudio.evaluate.retrieval``)."""
    from fusionaudio.evaluate.retrieval import evaluate_retrieval

    return evaluate_retrieval(input, model_dir, output, ref_key=ref_key, audio_root=audio_root,
                              batch_size=batch_size, device=device)["metrics"]


def main():
    import fire

    run_cli(lambda: fire.Fire({"train": train, "evaluate": evaluate}, serialize=_brief))


def _brief(result):
    if isinstance(result, dict) and "steps" in result:  # a training log: print a summary only
        last = result["steps"][-1] if result["steps"] else {}
        return {"n_steps": len(result["steps"]), "final_loss": last.get("loss"), "val": result["val"]}
    return result


if __name__ == "__main__":
    main()
