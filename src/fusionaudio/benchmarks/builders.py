"""One builder per benchmark: its metadata files (official layout) -> evaluation records.

Layouts read (paths inside ``--root``):

* ``esc50``: ``meta/esc50.csv`` (filename, fold, target, category, ...), audio in ``audio/``; all 2000
  clips (``--split`` 1..5 keeps one fold); output = ``category`` (``car_horn``, as the vocabulary).
* ``urbansound8k``: ``metadata/UrbanSound8K.csv`` (slice_file_name, fold, classID, class, ...), audio in
  ``audio/fold{fold}/``; all folds (``--split`` 1..10 keeps one); output = ``class``.
* ``fsd50k``: ``FSD50K.ground_truth/eval.csv`` (fname, labels, mids; labels comma-separated), audio in
  ``FSD50K.eval_audio/``; output = ``"Labels: A; B"`` with ``_`` read as a space, as the FusionAudio
  FSD50K eval file writes it.
* ``fsdnoisy18k``: ``FSDnoisy18k.meta/test.csv`` (fname, label), audio in ``FSDnoisy18k.audio_test/``;
  output = ``label`` (``Walk_or_footsteps``).
* ``tau-urban``: TAU Urban Acoustic Scenes 2020 Mobile development set:
  ``evaluation_setup/fold1_evaluate.csv`` (tab-separated filename, scene_label; ``--split meta`` reads
  every row of ``meta.csv`` instead); audio paths are the ``filename`` column (``audio/...``).
* ``audiocaps``: ``{split}.csv`` (audiocap_id, youtube_id, start_time, caption; split ``test``), audio
  ``audio/{split}/`` + ``--audio_pattern`` (default ``{youtube_id}.wav``); one record per caption.
* ``clotho``: ``clotho_captions_{split}.csv`` (file_name, caption_1..caption_5; split ``evaluation``),
  audio in ``{split}/``; one record per caption.
* ``clotho-aqa``: ``clotho_aqa_{split}.csv`` (file_name, QuestionText, answer, confidence; split
  ``test``), audio in ``audio_files/``; one record per answer (task ``closed-ended`` for yes/no answers,
  ``open-ended`` otherwise).
* ``air-bench-foundation`` / ``air-bench-chat``: ``Foundation_meta.json`` / ``Chat_meta.json``, audio
  in ``Foundation/{task_name}_{dataset_name}/{path}`` (``Chat/...``), as FusionAudio's scorer joins them.
"""

from __future__ import annotations

from fusionaudio.errors import InputError

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CLS_INSTRUCTION = "Describe the audio in detail."
CAPTION_INSTRUCTION = "Write a caption describing the audio clip."
LABEL_INSTRUCTION = "List the sound event labels of this audio clip."
# The AIR-Bench foundation instruction as the FusionAudio eval files hold it: a first line, the question,
# then the options in brackets (the MCQ evaluator parses this layout).
AIRBENCH_MCQ_HEAD = "Choose the most suitable answer from options to respond the question in next line."


class BenchmarkError(InputError):
    """Bad or missing benchmark metadata; the message names the file and the problem."""


@dataclass
class Builder:
    fn: Callable
    describe: str


def _rows(path: Path, required: tuple[str, ...], delimiter: str = ",") -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"{path}: metadata file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in fields]
        if missing:
            raise BenchmarkError(f"{path}: missing column(s) {missing} (columns: {fields})")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    return rows


class _Paths:
    def __init__(self, root, relative: bool):
        self.root, self.relative = Path(root), relative
        if not self.root.is_dir():
            raise BenchmarkError(f"{self.root}: benchmark folder not found")

    def audio(self, *parts: str) -> str:
        rel = Path(*parts)
        return rel.as_posix() if self.relative else (self.root / rel).as_posix()


def _record(audio_id, instruction, output, dataset, task, **extra) -> dict:
    return {"audio_id": audio_id, "instruction": instruction, "input": "", "output": output,
            "dataset": dataset, "task": task, **extra}


def _fold_filter(rows, split, path, column="fold"):
    if split is None:
        return rows
    kept = [r for r in rows if r[column] == str(split)]
    if not kept:
        raise BenchmarkError(f"{path}: no row with {column} = {split!r}")
    return kept


def esc50(p: _Paths, split=None, instruction=CLS_INSTRUCTION):
    path = p.root / "meta" / "esc50.csv"
    rows = _fold_filter(_rows(path, ("filename", "fold", "category")), split, path)
    return [_record(p.audio("audio", r["filename"]), instruction, r["category"], "esc50", "classification")
            for r in rows]


def urbansound8k(p: _Paths, split=None, instruction=CLS_INSTRUCTION):
    path = p.root / "metadata" / "UrbanSound8K.csv"
    rows = _fold_filter(_rows(path, ("slice_file_name", "fold", "class")), split, path)
    return [_record(p.audio("audio", f"fold{r['fold']}", r["slice_file_name"]), instruction, r["class"],
                    "urbansound8k", "classification") for r in rows]


def fsd50k(p: _Paths, split="eval", instruction=LABEL_INSTRUCTION):
    if split not in ("eval", "dev"):
        raise BenchmarkError(f"fsd50k: split must be eval or dev, not {split!r}")
    path = p.root / "FSD50K.ground_truth" / f"{split}.csv"
    out = []
    for n, r in enumerate(_rows(path, ("fname", "labels"))):
        labels = [x.strip().replace("_", " ") for x in r["labels"].split(",") if x.strip()]
        if not labels:
            raise BenchmarkError(f"{path}: row {n + 2}: empty labels")
        out.append(_record(p.audio(f"FSD50K.{split}_audio", f"{r['fname']}.wav"), instruction,
                           "Labels: " + "; ".join(labels), f"fsd50k_{split}", "cla_label"))
    return out


def fsdnoisy18k(p: _Paths, split="test", instruction=CLS_INSTRUCTION):
    if split not in ("test", "train"):
        raise BenchmarkError(f"fsdnoisy18k: split must be test or train, not {split!r}")
    path = p.root / "FSDnoisy18k.meta" / f"{split}.csv"
    return [_record(p.audio(f"FSDnoisy18k.audio_{split}", r["fname"]), instruction, r["label"], "FSDnoisy18k",
                    "classification") for r in _rows(path, ("fname", "label"))]


def tau_urban(p: _Paths, split="fold1_evaluate", instruction=CLS_INSTRUCTION):
    path = p.root / "meta.csv" if split == "meta" else p.root / "evaluation_setup" / f"{split}.csv"
    return [_record(p.audio(r["filename"]), instruction, r["scene_label"], "tau_urban_mobile", "classification")
            for r in _rows(path, ("filename", "scene_label"), delimiter="\t")]


def audiocaps(p: _Paths, split="test", instruction=CAPTION_INSTRUCTION, audio_pattern="{youtube_id}.wav"):
    path = p.root / f"{split}.csv"
    out = []
    for n, r in enumerate(_rows(path, ("audiocap_id", "youtube_id", "start_time", "caption"))):
        try:
            name = audio_pattern.format(**r)
        except KeyError as e:
            raise BenchmarkError(f"audiocaps: --audio_pattern names an unknown field {e}") from None
        out.append(_record(p.audio("audio", split, name), instruction, r["caption"], "audiocaps", "caption",
                           audiocap_id=r["audiocap_id"]))
    return out


def clotho(p: _Paths, split="evaluation", instruction=CAPTION_INSTRUCTION):
    path = p.root / f"clotho_captions_{split}.csv"
    cols = tuple(f"caption_{i}" for i in range(1, 6))
    return [_record(p.audio(split, r["file_name"]), instruction, r[c], "clotho", "caption")
            for r in _rows(path, ("file_name",) + cols) for c in cols]


def clotho_aqa(p: _Paths, split="test", instruction=None):
    path = p.root / f"clotho_aqa_{split}.csv"
    out = []
    for r in _rows(path, ("file_name", "QuestionText", "answer")):
        task = "closed-ended" if r["answer"].lower() in ("yes", "no") else "open-ended"
        out.append(_record(p.audio("audio_files", r["file_name"]), instruction or r["QuestionText"], r["answer"],
                           "ClothoAQA", task, confidence=r.get("confidence")))
    return out


def _meta_json(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"{path}: metadata file not found")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(items, list) or not items:
        raise BenchmarkError(f"{path}: expected a non-empty JSON list")
    for n, it in enumerate(items):
        missing = [k for k in required if not isinstance(it, dict) or k not in it]
        if missing:
            raise BenchmarkError(f"{path}: item {n}: missing field(s) {missing}")
    return items


def air_bench_foundation(p: _Paths, split=None, instruction=None):
    path = p.root / "Foundation_meta.json"
    keys = ("path", "question", "choice_a", "choice_b", "answer_gt", "task_name", "dataset_name")
    out = []
    for it in _meta_json(path, keys):
        choices = [str(it[k]) for k in ("choice_a", "choice_b", "choice_c", "choice_d") if it.get(k) is not None]
        text = instruction or f"{AIRBENCH_MCQ_HEAD}\n{it['question']}\nOptions: [{', '.join(choices)}]"
        out.append(_record(p.audio("Foundation", f"{it['task_name']}_{it['dataset_name']}", it["path"]), text,
                           str(it["answer_gt"]), it["dataset_name"], it["task_name"], options=choices))
    return out


def air_bench_chat(p: _Paths, split=None, instruction=None):
    path = p.root / "Chat_meta.json"
    keys = ("path", "question", "answer_gt", "task_name", "dataset_name", "meta_info")
    return [_record(p.audio("Chat", f"{it['task_name']}_{it['dataset_name']}", it["path"]),
                    instruction or it["question"], it["answer_gt"], it["dataset_name"], "Open-ended question",
                    meta_info=it["meta_info"]) for it in _meta_json(path, keys)]


BUILDERS: dict[str, Builder] = {
    "esc50": Builder(esc50, "meta/esc50.csv + audio/ (--split FOLD keeps one fold)"),
    "urbansound8k": Builder(urbansound8k, "metadata/UrbanSound8K.csv + audio/foldN/ (--split FOLD)"),
    "fsd50k": Builder(fsd50k, "FSD50K.ground_truth/{eval,dev}.csv + FSD50K.{eval,dev}_audio/ (--split eval)"),
    "fsdnoisy18k": Builder(fsdnoisy18k, "FSDnoisy18k.meta/{test,train}.csv + FSDnoisy18k.audio_{split}/"),
    "tau-urban": Builder(tau_urban, "evaluation_setup/fold1_evaluate.csv (tab-separated; --split meta: meta.csv)"),
    "audiocaps": Builder(audiocaps, "{test,val,train}.csv + audio/{split}/ (--audio_pattern)"),
    "clotho": Builder(clotho, "clotho_captions_{evaluation,development,validation}.csv + {split}/"),
    "clotho-aqa": Builder(clotho_aqa, "clotho_aqa_{test,val,train}.csv + audio_files/"),
    "air-bench-foundation": Builder(air_bench_foundation, "Foundation_meta.json + Foundation/{task}_{dataset}/"),
    "air-bench-chat": Builder(air_bench_chat, "Chat_meta.json + Chat/{task}_{dataset}/"),
}


def build(name: str, root, relative: bool = False, **options) -> list[dict]:
    """Records of benchmark ``name`` from the download at ``root`` (options: split, instruction, audio_pattern)."""
    if name not in BUILDERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose from {sorted(BUILDERS)}")
    fn = BUILDERS[name].fn
    accepted = fn.__code__.co_varnames[1 : fn.__code__.co_argcount]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise BenchmarkError(f"{name}: option(s) {unknown} do not apply (options: {list(accepted)})")
    return fn(_Paths(root, relative), **options)


def write_records(records: list[dict], out) -> None:
    """Write records as a JSON list (``.json``) or JSON lines (``.jsonl``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if out.suffix == ".jsonl":
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            json.dump(records, f, indent=1, ensure_ascii=False)
    os.replace(tmp, out)
