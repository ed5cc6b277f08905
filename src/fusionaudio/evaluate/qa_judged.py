"""Judged open answers: the AudioBench-style 0-5 rubric and the AIR-Bench chat pairwise 1-10 judge.

Both follow FusionAudio's scripts (``src/eval/AudioBench/*/LLM_judge.py``, ``src/eval/AIR-Bench/chat_score.py``):

* questions are (audio_id, instruction) groups; every reference of the group is kept, in order
  (duplicates too, as the original's grouping does). With ``references`` the ground truth comes from a
  second file (the original's two-file mode): predictions (``pred_key`` of the predictions file; the
  original reads ``output`` there) are joined to the reference groups on audio_id + instruction, the last
  prediction of a key wins, and reference groups without a prediction are left out and counted;
* ``graded``: judge at temperature 0, 512 tokens; the rating is the reply's last whitespace-separated
  token with parentheses stripped, read as a number; a reply that does not end in a number within 0-5
  scores 0 and is not a success. ``judge_score`` = mean x 20, ``success_rate`` = share of successes;
* ``chat``: judge at temperature 0, 1024 tokens; the reply must be exactly two whitespace-separated
  tokens, the second (the prediction's score) a number within 1-10; others are left out of the mean.
  ``judge_score`` = mean x 10, ``parse_success_rate`` = parsed / questions. The clip description is the
  group's ``meta_info`` (``"N/A"`` when absent).

Judge replies that cannot be parsed are scored as above (the published protocol), counted in
``n_unparsed_judge_replies`` and warned about; when more than ``max_unparsed`` of them (default
:data:`MAX_UNPARSED_SHARE`, 10 %) could not be parsed, the report is written and the run fails (exit 1):
such a score measures the judge's reply format rather than the answers (a wrong judge model or prompt).
"""

from __future__ import annotations

import sys

from fusionaudio.errors import RunError
from fusionaudio.evaluate.judge import OpenAICompatClient
from fusionaudio.evaluate.judge_prompts import load_prompt, reference_text
from fusionaudio.evaluate.qa_common import finish, mean, meta, question_groups
from fusionaudio.evaluate.report import default_output
from fusionaudio.evaluate.records import (
    DEFAULT_PRED_KEY,
    DEFAULT_REF_KEY,
    EvalInputError,
    get_field,
    get_prediction,
    get_text_list,
    load_predictions,
    load_records,
)

GRADED_MAX_TOKENS = 512
CHAT_MAX_TOKENS = 1024
#: share of unparsable judge replies past which a judged run fails (``--max_unparsed``)
MAX_UNPARSED_SHARE = 0.1


def check_unparsed(task: str, n_unparsed: int, n: int, max_unparsed: float, report: str) -> None:
    """Warn about judge replies that could not be parsed; :class:`RunError` past ``max_unparsed`` of them."""
    if not n_unparsed:
        return
    text = (f"{task}: {n_unparsed} of {n} judge replies could not be parsed (scored as the published protocol "
            f"does; see judge_reply in {report})")
    if n_unparsed / n > max_unparsed:
        raise RunError(f"{text}: more than --max_unparsed {max_unparsed:g}; is the judge model following the "
                       "prompt? (--max_unparsed 1 accepts the score anyway)")
    print(f"warning: {text}", file=sys.stderr)


def parse_graded(reply: str | None) -> tuple[float, bool]:
    """``(rating, success)`` from a 0-5 judge reply, as AudioBench's judge reads it."""
    parts = (reply or "").split()
    if not parts:
        return 0.0, False
    try:
        value = float(parts[-1].strip("()"))
    except ValueError:
        return 0.0, False
    return (value, True) if 0 <= value <= 5 else (0.0, False)


def parse_chat(reply: str | None) -> tuple[float | None, float | None]:
    """``(reference_score, model_score)`` from a two-score reply, as AIR-Bench chat scoring reads it;
    ``(None, None)`` unless the reply is exactly two tokens whose second is a number in 1-10."""
    parts = (reply or "").split()
    if len(parts) != 2:
        return None, None
    try:
        model = float(parts[1])
    except ValueError:
        return None, None
    if not 1 <= model <= 10:
        return None, None
    try:
        ref = float(parts[0])
    except ValueError:
        ref = None
    return ref, model


def join_two_files(references: str, predictions: str, pred_key: str, ref_key: str,
                   description_key: str | None = None) -> tuple[list[dict], dict]:
    """Question groups from a references file and a predictions file joined on (audio_id, instruction)."""
    pred_records = load_records(predictions)
    preds, duplicates = {}, 0
    for i, rec in enumerate(pred_records):
        key = (str(get_field(rec, "audio_id", predictions, i, types=())), get_field(rec, "instruction", predictions, i))
        duplicates += key in preds
        preds[key] = get_prediction(rec, pred_key, predictions, i)
    groups: dict[tuple, dict] = {}
    for i, rec in enumerate(load_records(references)):
        key = (str(get_field(rec, "audio_id", references, i, types=())), get_field(rec, "instruction", references, i))
        g = groups.setdefault(key, {"index": i, "audio_id": key[0], "question": key[1], "references": [],
                                    "record": rec})
        g["references"] += get_text_list(rec, ref_key, references, i)
    joined = [g | {"prediction": preds[k]} for k, g in groups.items() if k in preds]
    if not joined:
        raise EvalInputError(f"{predictions}: no prediction matches a question of {references} on audio_id + instruction")
    counts = {"n_reference_groups_without_prediction": len(groups) - len(joined),
              "n_duplicate_prediction_keys": duplicates}
    return joined, counts


def _load_groups(input, references, pred_key, ref_key, structured):
    if references:
        if structured:
            raise EvalInputError("--structured is not supported with --references (two-file mode)")
        groups, counts = join_two_files(references, input, pred_key, ref_key)
        return groups, counts, load_records(input), {}
    records, structured_metrics = load_predictions(input, pred_key, structured)
    return question_groups(records, input, pred_key, ref_key), {}, records, structured_metrics


def evaluate_graded(input: str, client: OpenAICompatClient, output: str | None = None,
                    pred_key: str = DEFAULT_PRED_KEY, ref_key: str = DEFAULT_REF_KEY,
                    structured: bool = False, references: str | None = None,
                    judge_prompt: str | None = None, max_unparsed: float = MAX_UNPARSED_SHARE) -> dict:
    """Judge ratings 0-5 per (audio_id, instruction) group against its references (AudioBench rubric)."""
    prompt = load_prompt("graded", judge_prompt)
    groups, counts, records, structured_metrics = _load_groups(input, references, pred_key, ref_key, structured)
    convs = [[{"role": "user", "content": prompt.render(
        question=g["question"], prediction=g["prediction"], references="\n".join(f"- {r}" for r in g["references"]),
        reference_text=reference_text(g["references"]), reference=reference_text(g["references"]))}]
        for g in groups]
    replies = client.chat_many(convs, temperature=0.0, max_tokens=GRADED_MAX_TOKENS)
    details = []
    for g, reply in zip(groups, replies):
        rating, ok = parse_graded(reply)
        details.append({k: g[k] for k in ("index", "audio_id", "question", "references", "prediction")}
                       | {"judge_reply": reply, "rating": rating, "success": ok})
    score = mean(d["rating"] for d in details)
    unparsed = sum(not d["success"] for d in details)
    metrics = {"judge_score": score * 20, "success_rate": mean(d["success"] for d in details),
               "score_0_5": score, "n_questions": len(details), "n_unparsed_judge_replies": unparsed,
               **counts, **structured_metrics}
    output = output or default_output(input, ".graded.json")
    result = finish("qa_graded", metrics, meta(input, records, pred_key, ref_key, client, prompt) |
                    {"references_file": references}, details, input, output, ".graded.json")
    check_unparsed("graded", unparsed, len(details), max_unparsed, output)
    return result


def evaluate_chat(input: str, client: OpenAICompatClient, output: str | None = None,
                  pred_key: str = DEFAULT_PRED_KEY, ref_key: str = DEFAULT_REF_KEY,
                  description_key: str = "meta_info", structured: bool = False,
                  references: str | None = None, judge_prompt: str | None = None,
                  max_unparsed: float = MAX_UNPARSED_SHARE) -> dict:
    """Pairwise 1-10 judge scores for the first reference and the prediction (AIR-Bench chat)."""
    prompt = load_prompt("chat", judge_prompt)
    groups, counts, records, structured_metrics = _load_groups(input, references, pred_key, ref_key, structured)
    convs = []
    for g in groups:
        desc = g["record"].get(description_key)
        desc = "N/A" if desc is None else str(desc)
        ref = g["references"][0]
        convs.append([{"role": "user", "content": prompt.render(
            question=g["question"], prediction=g["prediction"], assistant2_answer=g["prediction"], reference=ref,
            assistant1_answer=ref, description=desc, audio_description=desc)}])
    replies = client.chat_many(convs, temperature=0.0, max_tokens=CHAT_MAX_TOKENS)
    details = []
    for g, reply in zip(groups, replies):
        ref_score, model_score = parse_chat(reply)
        details.append({k: g[k] for k in ("index", "audio_id", "question", "prediction")}
                       | {"reference": g["references"][0], "judge_reply": reply, "reference_score": ref_score,
                          "model_score": model_score})
    ok = [d for d in details if d["model_score"] is not None]
    model = mean(d["model_score"] for d in ok)
    metrics = {"judge_score": None if model is None else model * 10,
               "parse_success_rate": len(ok) / len(details), "model_score": model,
               "reference_score": mean(d["reference_score"] for d in ok if d["reference_score"] is not None),
               "n_questions": len(details), "n_unparsed": len(details) - len(ok),
               "n_unparsed_judge_replies": len(details) - len(ok), **counts, **structured_metrics}
    output = output or default_output(input, ".chat.json")
    result = finish("qa_chat", metrics, meta(input, records, pred_key, ref_key, client, prompt) |
                    {"references_file": references}, details, input, output, ".chat.json")
    check_unparsed("chat", len(details) - len(ok), len(details), max_unparsed, output)
    return result

