"""MMAU (test-mini) evaluation as AudSemThinker's ``training/evaluate/mmau_mini_omni.py`` does it.

Two steps, with inference in between (``scripts/eval/eval_mmau.sh`` runs all three):

* ``prepare``: the MMAU JSON (items ``{id, audio_id, question, choices, answer, task, difficulty,
  sub-category}``) -> records for ``python -m fusionaudio.infer --arch audsemthinker --prompt_mode raw``
  whose instruction is the upstream multiple-choice prompt: the AudSemThinker question-answering prefix
  (``sections="three"`` asks for think / semantic_elements / answer, ``"two"`` for think / answer), the
  question, then ``"\\nChoices:\\n"`` and the choices as ``A. ...`` lines (``style="plain"``: no prefix,
  as ``mmau_mini.py``'s short form). Audio paths are ``audio_root`` joined with ``audio_id`` (upstream:
  the folder of the MMAU JSON);
* ``score``: the answer is the text between the first ``<answer>`` and the next ``</answer>`` (after an
  ``"assistant\\n"`` marker when the output still holds one), else the whole output stripped; it is right
  by the token-overlap ``string_match``. Accuracy (in %) by task (sound / music / speech), by difficulty
  (easy / medium / hard) and by sub-category, and the total over the three tasks, as upstream counts
  them; items whose audio was missing or unreadable (``prediction`` null) are left out, as upstream skips
  them, and counted. With ``structured`` the format compliance of the raw outputs is reported too.

Upstream generates with beam search (5 beams, no sampling, 400 new tokens) under the Qwen2.5-Omni
default system prompt, which is the AudSemThinker one.
"""

from __future__ import annotations

from fusionaudio.commands import subcommands_main

import json
import os
import re
from pathlib import Path

from fusionaudio.evaluate.records import EvalInputError, get_field, load_records
from fusionaudio.evaluate.report import default_output, make_result, write_report

TASKS = ("sound", "music", "speech")
DIFFICULTIES = ("easy", "medium", "hard")
_QA_HEAD = ("You are given a question and an audio clip. Your task is to answer the question based on the audio clip. "
            "The answers are multiple choice, so you need to select the correct answer from the given options. "
            "First, think about the question and the audio clip and put your thoughts in <think> and </think> tags. ")
_SEMANTIC = ("Then reason about the semantic elements involved in the audio clip and put your reasoning in "
             "<semantic_elements> and </semantic_elements> tags. ")
_ANSWER = "Then answer the question based on the audio clip, put your answer in <answer> and </answer> tags. "


def mmau_instruction(question: str, choices: list[str], sections: str = "three", style: str = "omni") -> str:
    """The upstream MMAU prompt for one item (see the module docstring)."""
    if style not in ("omni", "plain"):
        raise ValueError(f"style must be 'omni' or 'plain', not {style!r}")
    if sections not in ("three", "two"):
        raise ValueError(f"sections must be 'three' or 'two', not {sections!r}")
    body = f"{question}\nChoices:\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
    if style == "plain":
        return body
    return _QA_HEAD + (_SEMANTIC if sections == "three" else "") + _ANSWER + body


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", text.lower()))


def string_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """Upstream's token-overlap scorer: every word of the answer is in the prediction, and the prediction
    holds no word that only wrong choices have (words shared with the answer are allowed)."""
    pred, ans = _tokens(prediction), _tokens(answer)
    if not pred:
        return False
    wrong = set()
    for choice in choices:
        tokens = _tokens(choice)
        if tokens != ans:
            wrong |= tokens - ans
    return ans <= pred and pred.isdisjoint(wrong)


def extract_answer(output: str) -> str:
    """The answer text of a model output, as upstream extracts it."""
    text = output.split("assistant\n")[1] if "assistant\n" in output else output.strip()
    if "<answer>" in text:
        return text.split("<answer>", 1)[1].split("</answer>", 1)[0].strip()
    return text.strip()


def prepare(mmau_json: str, out: str, audio_root: str | None = None, sections: str = "three",
            style: str = "omni") -> int:
    """Write inference records for the MMAU items of ``mmau_json``; returns their number."""
    items = load_records(mmau_json)
    root = Path(audio_root) if audio_root else Path(mmau_json).parent
    records = []
    for i, it in enumerate(items):
        choices = get_field(it, "choices", mmau_json, i, types=(list,))
        question, answer = get_field(it, "question", mmau_json, i), get_field(it, "answer", mmau_json, i)
        if answer not in choices:
            raise EvalInputError(f"{mmau_json}: item {i}: answer {answer!r} is not one of its choices {choices}")
        audio = os.path.normpath(os.path.join(str(root), get_field(it, "audio_id", mmau_json, i)))
        records.append({"audio_id": audio, "instruction": mmau_instruction(question, choices, sections, style),
                        "input": "", "output": answer, "choices": choices, "id": it.get("id"),
                        "task": it.get("task"), "difficulty": it.get("difficulty"),
                        "sub-category": it.get("sub-category")})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    return len(records)


def _acc(pairs: dict) -> dict:
    return {k: {"accuracy": 100.0 * c / n if n else None, "n": n} for k, (c, n) in pairs.items()}


def score(input: str, output: str | None = None, pred_key: str = "prediction", ref_key: str = "output",
          structured: str | bool = False) -> dict:
    """Accuracy of an inference output made from :func:`prepare` records (see the module docstring)."""
    from fusionaudio.structured import compliance_rate, strict_format

    records = load_records(input)
    by_task = {t: [0, 0] for t in TASKS}
    by_diff = {d: [0, 0] for d in DIFFICULTIES}
    by_sub: dict[str, list[int]] = {}
    details, skipped, raws = [], 0, []
    for i, rec in enumerate(records):
        if pred_key not in rec:
            raise EvalInputError(f"{input}: record {i}: missing field {pred_key!r}")
        if rec[pred_key] is None:
            skipped += 1
            continue
        raw = get_field(rec, pred_key, input, i)
        raws.append(raw)
        answer = extract_answer(raw)
        ok = string_match(get_field(rec, ref_key, input, i), answer, get_field(rec, "choices", input, i, types=(list,)))
        for table, key in ((by_task, rec.get("task")), (by_diff, rec.get("difficulty"))):
            if key in table:
                table[key][0] += ok
                table[key][1] += 1
        sub = rec.get("sub-category")
        if sub:
            by_sub.setdefault(sub, [0, 0])
            by_sub[sub][0] += ok
            by_sub[sub][1] += 1
        details.append({"index": i, "id": rec.get("id"), "answer": answer, "match": int(ok)})
    n = sum(v[1] for v in by_task.values())
    metrics = {"accuracy": 100.0 * sum(v[0] for v in by_task.values()) / n if n else None, "n_scored": n,
               "n_skipped_no_audio": skipped, "by_task": _acc(by_task), "by_difficulty": _acc(by_diff),
               "by_sub_category": _acc(by_sub)}
    if structured and raws:
        variant = "three" if structured is True else str(structured)
        metrics["structured_compliance"] = compliance_rate(raws, variant)
        metrics["structured_strict_format"] = sum(strict_format(t, variant) for t in raws) / len(raws)
    meta = {"input": str(input), "n_records": len(records), "pred_key": pred_key, "ref_key": ref_key,
            "scorer": "string_match (AudSemThinker mmau_mini_omni.py)"}
    result = make_result("mmau", metrics, meta, details=details)
    write_report(result, output or default_output(input, ".mmau.json"))
    return result


def score_summary(input: str, output: str | None = None, pred_key: str = "prediction", ref_key: str = "output",
                  structured: str | bool = False) -> dict:
    """CLI form of :func:`score`: writes the report, prints the overall figures."""
    metrics = score(input, output, pred_key, ref_key, structured)["metrics"]
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def main(argv=None) -> int:
    return subcommands_main({"prepare": prepare, "score": score_summary}, "python -m fusionaudio.evaluate.mmau", argv)

if __name__ == "__main__":
    raise SystemExit(main())
