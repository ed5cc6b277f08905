#!/usr/bin/env python3
"""Helpers for the demo model (scripts/train/make_demo_model.sh).

    python scripts/train/demo_helper.py make_base --data_dir DATA --out_dir BASE [--seed 0]
    python scripts/train/demo_helper.py evaluate --base_model BASE [--model_path CKPT] --data_dir DATA
    python scripts/train/demo_helper.py probe --base_model BASE [--model_path CKPT] --data_dir DATA
    python scripts/train/demo_helper.py clip --base_model BASE [--model_path CKPT] [--seeds 0,1,2]

``make_base`` writes a small random reference-format base directory (the ``DEMO_CONFIG``
sizes below) whose SentencePiece tokenizer is trained offline on the synthetic set's
prompts and answers. ``evaluate`` captions the held-out clips (greedy decoding) and scores
them: attribute accuracy (``fusionaudio.demo.score.attribute_accuracy``), BLEU-4 and CIDEr
(pycocoevalcap's scorers on lower-cased, punctuation-stripped, whitespace-tokenised text),
and exact-match accuracy of the short QA answers. ``clip`` captions the bundled clip the way
``make demo`` does (greedy, and seeded sampling for each seed) and scores each caption against
the clip's scene.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The demo model's sizes: the tiny preset's structure (32 queries + 64 aggregator tokens),
#: a 4-layer, 128-wide Llama and a 64-wide, 3-block audio encoder. ~1.3 M parameters.
DEMO_CONFIG = dict(
    llm=dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=512),
    audio=dict(embed_dim=64, num_heads=4, mlp_ratio=4.0, specific_depth=2, unified_depth=1, tap_j=1, tap_k=0),
    qformer=dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2),
    aggregator=dict(num_attention_heads=4, intermediate_size=128),
)


def make_base(data_dir: str, out_dir: str, seed: int = 0, encoder_steps: int = 0, report: str | None = None,
              llm_layers: int | None = None, encoder_labels=None) -> str:
    """Demo base directory with a tokenizer trained on ``data_dir/train.json`` texts; its audio
    encoder is pre-trained for ``encoder_steps`` steps on the clips' column labels
    (``fusionaudio.demo.pretrain``; 0 = random like the rest). ``report``: a JSON file for
    the pre-training's held-out column accuracies. ``llm_layers``: the Llama's depth
    (default ``DEMO_CONFIG``'s). ``encoder_labels``: the column labels to pre-train on, comma
    separated (default all of ``synth_pretrain.LABELS``)."""
    from fusionaudio.gama.config import GamaConfig
    from fusionaudio.gama.prompts import build_prompt
    from fusionaudio.demo.pretrain import pretrain_encoder
    from fusionaudio.gama.tiny import make_reference_base_dir

    records = json.loads((Path(data_dir) / "train.json").read_text())
    texts = [build_prompt(r["instruction"], r.get("input") or None) + r["output"] for r in records]
    labels = encoder_labels.split(",") if isinstance(encoder_labels, str) else encoder_labels  # fire: "a,b" -> tuple
    sizes = {**DEMO_CONFIG, "llm": {**DEMO_CONFIG["llm"], **({"num_hidden_layers": llm_layers} if llm_layers else {})}}
    config = GamaConfig.from_name("tiny", **sizes)
    config.name = "demo-synth"

    def init(model):
        result = pretrain_encoder(model.audio_encoder, data_dir, steps=encoder_steps, seed=seed, labels=labels)
        print(json.dumps({"encoder_pretraining": result}))
        if report:
            Path(report).write_text(json.dumps(result, indent=2) + "\n")

    make_reference_base_dir(out_dir, config, seed=seed, weights="safetensors", num_shards=1, tokenizer_texts=texts,
                            init=init if encoder_steps else None)
    return out_dir


def _tokens(text: str) -> str:
    from fusionaudio.evaluate.caption_metrics import simple_tokenize

    return simple_tokenize(text)


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
    """BLEU-1..4 and CIDEr (pycocoevalcap scorers, no Java) of ``{clip: caption}``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    res = {k: [_tokens(v)] for k, v in predictions.items()}
    gts = {k: [_tokens(r) for r in references[k]] for k in predictions}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu_1": bleu[0], "bleu_4": bleu[3], "cider": cider}


def types_by_position(captions: dict[str, str], scenes: dict[str, dict]) -> list[float]:
    """For the k-th true event of a clip (k = 0, 1, ...): the share of such events that the
    caption names with the right type in the right order (aligned as ``attribute_accuracy``
    aligns them)."""
    from fusionaudio.demo.score import align_events, parse_caption

    hits: dict[int, list[bool]] = {}
    for aid, caption in captions.items():
        true = scenes[aid]["events"]
        pairs = align_events(true, parse_caption(caption)["events"])
        for k in range(len(true)):
            hits.setdefault(k, []).append(k in pairs)
    return [round(sum(h) / len(h), 3) for _, h in sorted(hits.items())]


def evaluate(data_dir: str, base_model: str | None = None, model_path: str | None = None, split: str = "test",
             batch_size: int = 32, max_new_tokens: int = 64, output: str | None = None,
             limit: int | None = None) -> dict:
    """Greedy captions and QA answers for the held-out split, scored; returns the metrics."""
    import torch

    from fusionaudio.audio import load_fbank
    from fusionaudio.gama.inference import FusionAudioInference, Request
    from fusionaudio.demo.scenes import load_scenes
    from fusionaudio.demo.score import attribute_accuracy

    torch.manual_seed(0)
    data = Path(data_dir)
    records = json.loads((data / f"{split}.json").read_text())[:limit]
    scenes = load_scenes(data / "scenes.jsonl")
    engine = FusionAudioInference(base_model, model_path, device="cpu", dtype="float32")
    fbanks = {aid: load_fbank(data / aid) for aid in dict.fromkeys(r["audio_id"] for r in records)}
    requests = [Request(r["instruction"], fbanks[r["audio_id"]]) for r in records]
    answers = engine.generate(requests, batch_size=batch_size, do_sample=False, max_new_tokens=max_new_tokens)

    captions = {r["audio_id"]: a for r, a in zip(records, answers) if r["task"] == "caption"}
    refs = {r["audio_id"]: [r["output"]] for r in records if r["task"] == "caption"}
    attrs = [attribute_accuracy(c, scenes[aid]) for aid, c in captions.items()]
    keys = [k for k in attrs[0] if k != "overall"] + ["overall"]
    attribute = {k: (sum(a[k] for a in attrs if a[k] is not None) / max(1, sum(a[k] is not None for a in attrs)))
                 for k in keys}
    qa = [(a, r["output"]) for r, a in zip(records, answers) if r["task"] == "qa"]
    norm = lambda s: _tokens(s)  # noqa: E731
    metrics = {"clips": len(captions), "attribute_accuracy": attribute,
               "types_by_position": types_by_position(captions, scenes), **caption_metrics(captions, refs),
               "qa_exact_match": sum(norm(a) == norm(b) for a, b in qa) / max(1, len(qa)), "qa_items": len(qa),
               "examples": [{"clip": aid, "prediction": captions[aid], "reference": refs[aid][0]}
                            for aid in list(captions)[:5]]}
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps({"metrics": metrics, "captions": captions}, indent=2) + "\n")
    return metrics


def probe(base_model: str, data_dir: str, model_path: str | None = None, clips: int = 60, train_clips: int = 40) -> dict:
    """Linear probes: how well each stage of the audio path states the column labels of
    ``fusionaudio.demo.pretrain`` (kind, pitch, loudness) for held-out clips. Logistic
    regression fitted on ``train_clips`` test-split clips, scored on the rest. Stages: ``pool``
    (encoder, mean over mel rows), ``aggregator`` and ``audio_tokens`` (the 64 aggregator tokens
    the Llama reads). Features are standardised on the fitted clips. ``kind_recall``: per event
    type, the held-out columns of that type the ``pool`` probe names right, as "hits/columns"."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fusionaudio.gama.loading import load_model
    from fusionaudio.demo.pretrain import IGNORE, LABELS, load_split

    model, _ = load_model(base_model, model_path)
    model.eval()
    fb, lab = load_split(data_dir, "test", clips)
    with torch.no_grad():
        pooled, agg = model.pooled_and_aggregated(fb)
        tokens = model.audio_proj_audioenc(model.audio_proj_norm_audioenc(agg))  # encode_audio's last step
    cols = tokens.shape[1]
    out = {}
    for stage, feats in (("pool", pooled), ("aggregator", agg), ("audio_tokens", tokens)):
        x = feats.reshape(-1, feats.shape[-1]).numpy()
        first = np.arange(len(x)) < train_clips * cols
        out[stage] = {}
        for name in ("kind", "pitch", "loudness"):
            y = lab[name].reshape(-1).numpy()
            fit, score = first & (y != IGNORE), ~first & (y != IGNORE)
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x[fit], y[fit])
            out[stage][name] = round(float(clf.score(x[score], y[score])), 3)
            if stage == "pool" and name == "kind":
                guess, truth = clf.predict(x[score]), y[score]
                out["kind_recall"] = {kind: f"{int((guess[truth == i] == i).sum())}/{int((truth == i).sum())}"
                                      for i, kind in enumerate(LABELS["kind"])}
    return out


def clip(base_model: str, model_path: str | None = None, seeds=(0,), audio: str | None = None) -> dict:
    """The bundled clip's caption under greedy decoding and under quick_inference's seeded sampling
    (``make demo`` is seed 0), each with its attribute accuracy against ``synth.DEMO_SCENE``;
    ``all_right``: every attribute of every caption right. ``audio``: default the bundled
    ``data/example/demo_clip.wav``."""
    from fusionaudio.infer.quick import quick_inference_parser, run_quick_inference
    from fusionaudio.demo.scenes import DEMO_SCENE
    from fusionaudio.demo.score import attribute_accuracy

    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    audio = audio or str(Path(__file__).resolve().parents[2] / "data" / "example" / "demo_clip.wav")
    model = ["--base_model", base_model] + (["--model_path", model_path] if model_path else [])
    runs = [("greedy", ["--greedy"])] + [(f"seed {s}", ["--seed", str(s)]) for s in seeds]
    out = {}
    for name, extra in runs:
        argv = ["--audio", audio, "--question", "Describe the audio.", "--device", "cpu", *model, *extra]
        caption = run_quick_inference(quick_inference_parser().parse_args(argv))[0]["response"]
        score = attribute_accuracy(caption, DEMO_SCENE)
        out[name] = {"caption": caption, "overall": round(score["overall"], 3),
                     "wrong": [k for k, v in score.items() if v is not None and k != "overall" and v < 1]}
    out["all_right"] = all(r["overall"] == 1.0 for r in out.values())
    return out


def _stages(train_dir: Path) -> list[tuple[dict, dict]]:
    """``(training_args, train_summary)`` of the run in ``train_dir`` and of the runs it started from."""
    out = []
    while train_dir is not None:
        args = json.loads((train_dir / "training_args.json").read_text())
        out.insert(0, (args, json.loads((train_dir / "train_summary.json").read_text())))
        start = args.get("start_checkpoint")
        train_dir = Path(start) if start and (Path(start) / "training_args.json").is_file() else None
    return out


def model_card(out_dir: str, work: str, train_dir: str | None = None) -> str:
    """Write ``out_dir/README.md``: what the demo model is, how it was made, its scores."""
    w = Path(work)
    before, after = (json.loads((w / f"eval_{s}.json").read_text())["metrics"] for s in ("before", "after"))
    stages = _stages(Path(train_dir) if train_dir else w / "train")
    args = stages[0][0]
    steps = " then ".join(f"{s['global_step']} steps of {a['batch_size']} records at lr {a['learning_rate']}"
                          for a, s in stages)
    attr = lambda k: lambda m: m["attribute_accuracy"][k]  # noqa: E731
    rows = [("attribute accuracy (overall)", attr("overall")), *((f"  {k}", attr(k)) for k in
            ("count", "types", "variant", "pitch", "loudness", "length", "n_clicks")),
            ("BLEU-4", lambda m: m["bleu_4"]), ("CIDEr", lambda m: m["cider"]),
            ("QA exact match", lambda m: m["qa_exact_match"])]
    table = "\n".join(f"| {name} | {f(before):.3f} | {f(after):.3f} |" for name, f in rows)
    cfg = json.loads(Path(out_dir, "fusionaudio_config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(Path(out_dir, "model.safetensors")), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    au, llm = cfg["audio"], cfg["llm"]
    text = f"""# Demo model (tiny, synthetic sound scenes)

A {n_params / 1e6:.1f} M-parameter GAMA-architecture model (32 Q-Former + 64 aggregator audio
tokens, a {llm['num_hidden_layers']}-layer {llm['hidden_size']}-wide Llama with LoRA, a
{au['specific_depth'] + au['unified_depth']}-block {au['embed_dim']}-wide audio encoder) trained from random
weights on CPU by `scripts/train/make_demo_model.sh` (seed {args['seed']}) on synthetic scenes
(`fusionaudio.demo.scenes`: tones, chirps, noise bursts, clicks; a caption and a few questions per clip).
The audio encoder was pre-trained on the clips' per-column labels (`fusionaudio.demo.pretrain`)
and then frozen; everything else, the tiny Llama included, was trained from random weights
(`trainable_params={args['trainable_params']}`, a demo-only mode) for {steps}. It only knows this
toy world: it is a working example of the pipeline, not an audio-language model.

Held-out split ({after['clips']} clips, greedy decoding):

| metric | before training | after training |
|---|---|---|
{table}
"""
    Path(out_dir, "README.md").write_text(text)
    return text


if __name__ == "__main__":
    from fusionaudio.commands import subcommands_main

    sys.exit(subcommands_main({"make_base": make_base, "evaluate": evaluate, "probe": probe, "clip": clip,
                               "model_card": model_card}, "python scripts/train/demo_helper.py"))
