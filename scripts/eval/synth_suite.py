#!/usr/bin/env python3
"""Run batch inference and every applicable evaluation on a synthetic test split.

    python scripts/eval/synth_suite.py --data_dir runs/demo/data --out_dir runs/suite \
        [--base_model DIR] [--model_path CKPT] [--judge_base_url URL --judge_model M]

Writes predictions (``fusionaudio.infer``, greedy), then views of them for each evaluator:
captions (captioning metrics), yes/no questions (yes/no accuracy), "what comes first?"
questions as 4-way classification of the first event type (the reference's embedding
match), and with a judge, 0-5 graded QA on every question; finally one summary table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fusionaudio.commands import run_command
from fusionaudio.demo.scenes import load_scenes
from fusionaudio.errors import InputError, RunError

FIRST_QUESTIONS = ("What is the first sound?", "Which sound comes first?")
TYPE_LABELS = {"tone": "tone", "chirp": "chirp", "noise": "noise burst", "clicks": "clicks"}


def run(*cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    if subprocess.run([sys.executable, *map(str, cmd)]).returncode != 0:
        raise RunError(f"step failed: python {' '.join(map(str, cmd))} (its error is printed above)")


def write(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="output of `python -m fusionaudio.demo.scenes` (test.json, scenes.jsonl)")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--base_model", default=None)
    ap.add_argument("--model_path", default=None)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--judge_base_url", default=None)
    ap.add_argument("--judge_model", default=None)
    args = ap.parse_args(argv)
    return run_command(lambda: suite(args))


def check_split(data: Path) -> None:
    missing = [name for name in ("test.json", "scenes.jsonl") if not (data / name).is_file()]
    if missing:
        raise InputError(f"{data}: no {' or '.join(missing)}; make a split first: python -m fusionaudio.demo.scenes "
                         f"--out_dir {data} --n_train 0 --n_test 20 --seed 1 (scripts/train/make_demo_model.sh "
                         "writes runs/demo/data)")


def suite(args) -> None:
    data, out = Path(args.data_dir), Path(args.out_dir)
    check_split(data)
    out.mkdir(parents=True, exist_ok=True)
    preds_path = out / "predictions.json"
    infer = ["-m", "fusionaudio.infer", "--json_input", data / "test.json", "--json_output", preds_path,
             "--do_sample", "false", "--max_new_tokens", "64", "--batch_size", args.batch_size, "--device", "cpu"]
    if args.base_model:
        infer += ["--base_model", args.base_model]
    if args.model_path:
        infer += ["--model_path", args.model_path]
    run(*infer)

    preds = json.loads(preds_path.read_text())
    for r in preds:  # the views below live in out_dir: make audio paths absolute
        r["audio_id"] = str((data / r["audio_id"]).resolve())
    scenes = {str((data / k).resolve()): v for k, v in load_scenes(data / "scenes.jsonl").items()}
    reports = []
    captions = write(out / "captions.json", [r for r in preds if r.get("task") == "caption"])
    run("-m", "fusionaudio.evaluate.captioning", "--input", captions)
    reports.append(out / "captions.cap.json")
    yesno = [r for r in preds if r["output"].strip(" .").lower() in ("yes", "no")]
    run("-m", "fusionaudio.evaluate.qa", "yesno", "--input", write(out / "yesno.json", yesno))
    reports.append(out / "yesno.yesno.json")
    first = [dict(r, output=TYPE_LABELS[scenes[r["audio_id"]]["events"][0]["type"]])
             for r in preds if r["instruction"] in FIRST_QUESTIONS]
    vocab = out / "event_types.csv"
    vocab.write_text("".join(f"{i},{name}\n" for i, name in enumerate(TYPE_LABELS.values())))
    run("-m", "fusionaudio.evaluate.classification", "--input", write(out / "first_event.json", first),
        "--vocabulary", vocab)
    reports.append(out / "first_event.cls.json")
    if args.judge_base_url and args.judge_model:
        qa = write(out / "qa.json", [r for r in preds if r.get("task") == "qa"])
        run("-m", "fusionaudio.evaluate.qa", "graded", "--input", qa, "--judge_base_url", args.judge_base_url,
            "--judge_model", args.judge_model)
        reports.append(out / "qa.graded.json")
    run("-m", "fusionaudio.evaluate.report", "gather", *reports, "--output", out / "summary.md")
    print(f"wrote {out}: predictions.json, the evaluators' reports, summary.md (the table above)")


if __name__ == "__main__":
    sys.exit(main())
