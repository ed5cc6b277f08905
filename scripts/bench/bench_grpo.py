#!/usr/bin/env python3
"""AudSemThinker SFT then GRPO on a synthetic multiple-choice task whose answer is in the audio (CPU).

    python scripts/bench/bench_grpo.py [--grpo_steps 200 --work_dir /tmp/bench_grpo --png docs/audsemthinker_grpo_reward.png]

The task: "Is it a tone or a noise?" with choices A. tone / B. noise, over 2 s clips (a sine at a random
pitch and level, or white noise at a random level). The model is the tiny random Qwen2.5-Omni of
``fusionaudio.audsem.tiny``.

1. SFT (``fusionaudio.audsem.train``, two-section targets, LoRA on every linear layer) teaches the answer
   format, every clip once with each answer: the model answers in format, by chance.
2. GRPO (``fusionaudio.audsem.grpo``, from the SFT adapter, rewards accuracy + strict_format) can only raise
   the accuracy reward by listening: the reward per step is plotted (``--png``) with its moving average.
   Rollouts sample at temperature 0.7 with top_p 0.9, which cuts the flat tail of the tiny model's random
   vocabulary: a stray token's gradient adds noise to that of the one answer token carrying the reward
   (with top_p 1.0 the reward rises too, more slowly: docs/audsemthinker.md).

Held-out clips are answered greedily before and after GRPO (accuracy, format rate). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf

QUESTION = "Is it a tone or a noise?"
CHOICES = ["tone", "noise"]


def make_clips(folder: Path, count: int, rng: np.random.Generator, prefix: str) -> list[tuple[str, str]]:
    """``count`` clips per class: (file name, answer letter)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(32000) / 16000
    clips = []
    for i in range(count):
        tone = rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        noise = rng.uniform(0.03, 0.2) * rng.standard_normal(t.size)
        for wave, letter, kind in ((tone, "A", "tone"), (noise, "B", "noise")):
            name = f"{prefix}_{kind}_{i}.wav"
            sf.write(folder / name, wave.astype(np.float32), 16000)
            clips.append((name, letter))
    return clips


def rescale_tiny_model(base: Path, head_scale: float, audio_scale: float) -> None:
    """Two changes to the tiny random model, so that a few hundred CPU steps can teach it anything:
    ``lm_head`` times ``head_scale`` (at std 0.02 over 64 dims no logit can exceed about 1.3, so no LoRA could
    make an answer likely) and the audio encoder's two input convolutions times ``audio_scale`` (at their
    random init the sinusoidal positions swamp the clip: a tone's and a noise's mean audio embeddings have
    cosine 0.996; at x10, 0.15)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(base / "model.safetensors"))
    for key in weights:
        if key.endswith("lm_head.weight"):
            weights[key] = weights[key] * head_scale
        elif key.endswith(("audio_tower.conv1.weight", "audio_tower.conv2.weight")):
            weights[key] = weights[key] * audio_scale
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})


def write_data(work: Path, train) -> tuple[Path, Path]:
    """GRPO records (the right answer) and SFT records: every clip twice, once answered A and once B, so that
    SFT teaches the format and nothing about the task (no clip's answer can be memorised)."""
    from fusionaudio.audsem.grpo_data import question_text

    rows = [{"audio_id": f"audio/{name}", "question": QUESTION, "choices": CHOICES, "answer": letter}
            for name, letter in train]
    grpo_data = work / "grpo.json"
    grpo_data.write_text(json.dumps(rows))
    sft_rows = [{"audio_id": r["audio_id"], "instruction": question_text(r), "input": "",
                 "output": f"<think>I listen.</think>\n<answer>{letter}</answer>"} for r in rows for letter in "AB"]
    sft_data = work / "sft.json"
    sft_data.write_text(json.dumps(sft_rows))
    return sft_data, grpo_data


def evaluate(base, adapter, clips, folder: Path, temperature: float, top_p: float, samples: int = 4) -> dict:
    """Held-out clips answered greedily (accuracy, strict-format rate) and sampled as the GRPO rollouts are
    (``samples`` answers per clip: the expected accuracy reward of the policy)."""
    from fusionaudio.audsem.grpo_data import question_text
    from fusionaudio.audsem.inference import AudSemThinkerInference
    from fusionaudio.audsem.rewards import accuracy, strict_format

    engine = AudSemThinkerInference(base, model_path=adapter, prompt_mode="raw")
    question = question_text({"question": QUESTION, "choices": CHOICES})
    paths, answers = [str(folder / name) for name, _ in clips], [letter for _, letter in clips]
    texts = engine.predict_batch(paths, question, max_new_tokens=24, greedy=True)
    sampled = engine.predict_batch(paths * samples, question, max_new_tokens=24, do_sample=True,
                                   temperature=temperature, top_p=top_p, top_k=0, seed=0)
    return {"greedy_accuracy": float(np.mean(accuracy(texts, answers))),
            "greedy_format": float(np.mean(strict_format(texts)) * 2),
            "sampled_accuracy": float(np.mean(accuracy(sampled, answers * samples))),
            "sampled_format": float(np.mean(strict_format(sampled)) * 2), "example": texts[0]}


def plot(log: list[dict], png: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in log if "reward" in e]
    steps = [e["step"] for e in entries]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for key, label, color in (("reward", "total reward", "tab:blue"),
                              ("rewards/accuracy/mean", "accuracy reward", "tab:green"),
                              ("rewards/strict_format/mean", "format reward (max 0.5)", "tab:orange")):
        values = np.array([e[key] for e in entries])
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
        ax.plot(steps[window - 1:], smooth, color=color, label=f"{label} ({window}-step mean)")
    ax.set_xlabel("GRPO optimizer step")
    ax.set_ylabel("mean reward of the step's completions")
    ax.set_title("AudSemThinker GRPO, tiny model, tone-or-noise task (CPU)")
    ax.set_ylim(-0.05, 1.55)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work_dir", default="/tmp/bench_grpo")
    p.add_argument("--png", default="docs/audsemthinker_grpo_reward.png")
    p.add_argument("--train_clips", type=int, default=16, help="clips per class for training")
    p.add_argument("--eval_clips", type=int, default=20, help="held-out clips per class")
    p.add_argument("--sft_steps", type=int, default=400)
    p.add_argument("--sft_targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                   help="LoRA target modules of the SFT adapter (GRPO trains the same adapter on)")
    p.add_argument("--sft_lr", type=float, default=1e-2, help="decayed linearly to 0; gradients clipped to norm 1")
    p.add_argument("--grpo_steps", type=int, default=200)
    p.add_argument("--grpo_lr", type=float, default=2e-3, help="after --warmup_steps, decayed linearly to 0 (TRL)")
    p.add_argument("--warmup_steps", type=int, default=20)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient against the SFT policy")
    p.add_argument("--temperature", type=float, default=0.7, help="GRPO rollout temperature")
    p.add_argument("--top_p", type=float, default=0.9, help="GRPO rollout nucleus")
    p.add_argument("--batch_size", type=int, default=64, help="GRPO completions per optimizer step")
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head_scale", type=float, default=10.0, help="factor on the tiny model's random lm_head")
    p.add_argument("--audio_scale", type=float, default=10.0, help="factor on its audio input convolutions")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from fusionaudio.audsem.grpo import grpo
    from fusionaudio.audsem.tiny import build_tiny_checkpoint
    from fusionaudio.audsem.train import train

    work = Path(a.work_dir)
    rng = np.random.default_rng(a.seed)
    base = build_tiny_checkpoint(work / "omni", full_omni=True, seed=a.seed)
    rescale_tiny_model(base, a.head_scale, a.audio_scale)
    train_clips = make_clips(work / "audio", a.train_clips, rng, "train")
    eval_clips = make_clips(work / "audio", a.eval_clips, rng, "eval")
    sft_data, grpo_data = write_data(work, train_clips)
    t0 = time.time()
    train(str(base), str(sft_data), str(work / "sft"), lr=a.sft_lr, batch_size=4, max_steps=a.sft_steps,
          lora_dropout=0.0, prompt_mode="raw", structured_variant="two", seed=a.seed, max_grad_norm=1.0,
          target_modules=a.sft_targets)
    t_sft = time.time() - t0
    before = evaluate(base, work / "sft", eval_clips, work / "audio", a.temperature, a.top_p)
    t0 = time.time()
    out = work / "grpo"
    result = grpo(str(base), str(grpo_data), str(out), model_path=str(work / "sft"), lr=a.grpo_lr,
                  batch_size=a.batch_size, num_generations=a.num_generations, max_steps=a.grpo_steps,
                  max_completion_length=24, temperature=a.temperature, top_p=a.top_p, beta=a.beta,
                  warmup_steps=a.warmup_steps, logging_steps=1, save_steps=0, seed=a.seed, device="cpu")
    t_grpo = time.time() - t0
    after = evaluate(base, out, eval_clips, work / "audio", a.temperature, a.top_p)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    plot(log, Path(a.png), window=10)
    rewards = [e["reward"] for e in log if "reward" in e]
    acc = [e["rewards/accuracy/mean"] for e in log if "reward" in e]
    tenth = max(1, len(rewards) // 10)
    smooth = np.convolve(acc, np.ones(10) / 10, mode="valid")
    reached = [e["step"] for e, m in zip([e for e in log if "reward" in e][9:], smooth) if m >= 0.9]
    print(json.dumps({
        "grpo_steps": result["steps"], "sft_seconds": round(t_sft, 1), "grpo_seconds": round(t_grpo, 1),
        "reward_first_10pct": round(float(np.mean(rewards[:tenth])), 3),
        "reward_last_10pct": round(float(np.mean(rewards[-tenth:])), 3),
        "accuracy_reward_first_10pct": round(float(np.mean(acc[:tenth])), 3),
        "accuracy_reward_last_10pct": round(float(np.mean(acc[-tenth:])), 3),
        "first_step_accuracy_reward_10_step_mean_over_0.9": reached[0] if reached else None,
        "heldout_before_grpo": before, "heldout_after_grpo": after, "png": a.png}, indent=1))


if __name__ == "__main__":
    main()
