"""Question answering: multiple choice, judged open answers, pairwise chat judging, yes/no.

* ``mcq`` (AIR-Bench foundation style): options come from the record's ``options`` list or
  from the ``Options: [a, b, c, d]`` line of the instruction; the ground truth (option text or
  letter) becomes a letter. Free-form answers are aligned to a letter by rules first
  (``"B"``, ``"(B)"``, ``"B."``, ``"The answer is B"``, or exactly an option's text); only the
  rest go to the LLM judge. Accuracy overall, per ``task`` and per ``dataset``.
* ``graded`` (AudioBench / Clotho-AQA style): records are grouped by (audio_id, instruction),
  the group's ground truths are the references, and the judge rates the prediction 0-5
  (reported as the mean and x20 on a 0-100 scale; an unparsable rating counts as 0).
* ``chat`` (AIR-Bench chat style): the judge scores the reference answer and the prediction
  1-10 each, given the clip's textual description (``meta_info``); mean model score, mean
  reference score, model score x10 (unparsable replies are left out and counted).
* ``yesno``: questions whose references are all yes/no; ground truth is the majority (a tie
  accepts either); the first yes/no word of the prediction is its answer.

CLI (judge flags go anywhere; the key is read from the env variable ``--judge_api_key_env``)::

    python -m fusionaudio.evaluate.qa mcq --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa graded --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa chat --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa yesno --input preds.json
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from .judge import OpenAICompatClient, client_from_args
from .records import (
    DEFAULT_PRED_KEY,
    DEFAULT_REF_KEY,
    EvalInputError,
    count_null,
    get_field,
    get_prediction,
    get_text_list,
    load_predictions,
    normalize_text,
    run_cli,
)
from .report import default_output, make_result, write_report

LETTERS = "ABCDEFGH"


# ------------------------------------------------------------------ multiple choice
def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets/parentheses/quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'" and not "".join(cur).strip():
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip().strip("\"'").strip() for p in parts if p.strip()]


def parse_options(instruction: str) -> list[str]:
    """Options from the last ``Options: [...]`` line of an instruction (empty list if none)."""
    m = list(re.finditer(r"options\s*:\s*", instruction, re.IGNORECASE))
    if not m:
        return []
    rest = instruction[m[-1].end():].strip()
    if rest.startswith("[") and rest.endswith("]"):
        rest = rest[1:-1]
    return split_top_level(rest)


def _norm_option(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s\[\].,-]", " ", text.lower())).strip(" .")


def rule_match(answer: str, options: list[str]) -> str | None:
    """A letter when the answer is clearly one (``B``, ``(B)``, ``B.``, ``answer is B``) or an option's text."""
    letters = LETTERS[: len(options)]
    s = answer.strip()
    if not s:
        return None
    m = re.match(rf"^(?:\(([{letters}])\)|([{letters}])(?:$|[.:)\]]|\s*[-,]\s))", s)
    if m:
        return m.group(1) or m.group(2)
    m = re.search(rf"\b(?:answer|option|choice)\s*(?:is|would be|:)?\s*[:\-]?\s*\(?([{letters}])\)?(?=$|[\s.,:;)!])", s, re.I)
    if m and m.group(1).upper() in letters and (m.group(1).isupper() or "(" in m.group(0)):
        return m.group(1).upper()
    norm = _norm_option(s)
    hits = [letters[i] for i, opt in enumerate(options) if _norm_option(opt) == norm]
    return hits[0] if len(set(hits)) == 1 else None


def ground_truth_letter(ref: str, options: list[str]) -> str | None:
    """The letter of the ground truth (given as a letter or as an option's text)."""
    letters = LETTERS[: len(options)]
    s = ref.strip()
    m = re.fullmatch(rf"\(?([{letters}])\)?\.?", s)
    if m:
        return m.group(1)
    for i, opt in enumerate(options):
        if _norm_option(opt) == _norm_option(s):
            return letters[i]
    return None


def mcq_messages(question: str, answer: str, options: list[str]) -> list[dict]:
    """Judge prompt: map a free-form answer to one option letter."""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    letters = ", ".join(LETTERS[: len(options)])
    content = (
        "You map a free-form answer onto one option of a multiple-choice question.\n\n"
        f"Question:\n{question}\n\nOptions:\n{opts}\n\nGiven answer:\n{answer}\n\n"
        "Which option does the given answer select? If it states an option letter, use that letter. "
        "If it matches no option exactly, pick the closest one.\n"
        f"Reply with a single letter ({letters}) and nothing else."
    )
    return [{"role": "user", "content": content}]


def _mcq_options(rec: dict, i: int, input, ref_key: str, options_key: str):
    question = get_field(rec, "instruction", input, i, default="")
    options = rec.get(options_key)
    if options is None:
        options = parse_options(question)
    if not isinstance(options, list) or len(options) < 2 or len(options) > len(LETTERS):
        raise EvalInputError(f"{input}: record {i}: no usable options (field {options_key!r} or 'Options: [...]')")
    options = [str(o) for o in options]
    ref = get_field(rec, ref_key, input, i)
    gt = ground_truth_letter(ref, options)
    if gt is None:
        raise EvalInputError(f"{input}: record {i}: ground truth {ref!r} is not one of the options {options} "
                             f"(give the record an {options_key!r} list if the options contain commas)")
    return question, options, gt


def evaluate_mcq(input: str, output: str | None = None, pred_key: str = DEFAULT_PRED_KEY,
                 ref_key: str = DEFAULT_REF_KEY, options_key: str = "options",
                 client: OpenAICompatClient | None = None, skip_bad_options: bool = False,
                 structured: bool = False) -> dict:
    """Multiple-choice accuracy; without ``client`` unresolved answers count as wrong (and are counted).

    A record whose options cannot be parsed or do not contain its ground truth is an error, or,
    with ``skip_bad_options``, is left out and counted (``n_skipped_bad_options``).
    """
    records, structured_metrics = load_predictions(input, pred_key, structured)
    items, skipped = [], []
    for i, rec in enumerate(records):
        try:
            question, options, gt = _mcq_options(rec, i, input, ref_key, options_key)
        except EvalInputError as e:
            if not skip_bad_options:
                raise
            skipped.append({"index": i, "error": str(e)})
            continue
        pred = get_prediction(rec, pred_key, input, i)
        items.append({"index": i, "question": question, "options": options, "gt": gt, "prediction": pred,
                      "choice": rule_match(pred, options), "how": "rule", "task": rec.get("task"),
                      "dataset": rec.get("dataset")})
    if not items:
        raise EvalInputError(f"{input}: no record with usable options")
    todo = [it for it in items if it["choice"] is None and it["prediction"].strip()]
    if todo and client is not None:
        replies = client.chat_many([mcq_messages(it["question"], it["prediction"], it["options"]) for it in todo],
                                   max_tokens=8)
        for it, reply in zip(todo, replies):
            it["judge_reply"] = reply
            it["choice"], it["how"] = rule_match(reply, it["options"]), "llm"
    for it in items:
        if it["choice"] is None:
            it["how"] = "unresolved"
        it["correct"] = it["choice"] == it["gt"]
    metrics = {"accuracy": _mean([it["correct"] for it in items]),
               "n_rule_matched": sum(it["how"] == "rule" for it in items),
               "n_llm_aligned": sum(it["how"] == "llm" and it["choice"] is not None for it in items),
               "n_unresolved": sum(it["how"] == "unresolved" for it in items),
               "n_skipped_bad_options": len(skipped),
               "by_task": _breakdown(items, "task"), "by_dataset": _breakdown(items, "dataset")}
    for it in items:
        del it["question"], it["options"]
    meta = _meta(input, records, pred_key, ref_key, client)
    metrics.update(structured_metrics)
    return _finish("qa_mcq", metrics, meta, items + skipped, input, output, ".mcq.json")


# ------------------------------------------------------------------ judged answers
def graded_messages(question: str, references: list[str], prediction: str) -> list[dict]:
    """Judge prompt: rate an answer 0-5 against one or more reference answers."""
    refs = "\n".join(f"- {r}" for r in references)
    content = (
        "You grade an answer to a question about an audio clip, using reference answers written by "
        "people who listened to it. Several references may disagree slightly; an answer that agrees "
        "with any of them is right.\n\n"
        f"Question: {question}\n\nReference answer(s):\n{refs}\n\nModel answer: {prediction}\n\n"
        "Scale:\n"
        "5 = correct and as specific as the best reference\n"
        "4 = correct, with a small omission or imprecision\n"
        "3 = partly correct: the main point is right, some details are wrong or missing\n"
        "2 = on topic but mostly wrong\n"
        "1 = barely related to the references\n"
        "0 = wrong, irrelevant, or a refusal such as 'cannot tell'\n\n"
        "Write one sentence of justification, then a last line of the form 'Rating: N' with N from 0 to 5."
    )
    return [{"role": "user", "content": content}]


def chat_messages(question: str, reference: str, prediction: str, description: str) -> list[dict]:
    """Judge prompt: score a reference answer and a model answer 1-10 each, given a clip description."""
    content = (
        "Compare two answers to a question about an audio clip. You cannot hear the clip; a textual "
        "description of it is given instead.\n\n"
        f"[Audio description]\n{description}\n\n[Question]\n{question}\n\n"
        f"[Answer 1]\n{reference}\n\n[Answer 2]\n{prediction}\n\n"
        "Score each answer from 1 to 10 for helpfulness, relevance, accuracy and level of detail "
        "(10 is best). Reply with one line holding exactly two integers separated by a space: the "
        "score of Answer 1, then the score of Answer 2."
    )
    return [{"role": "user", "content": content}]


def parse_rating(text: str, lo: float = 0, hi: float = 5) -> float | None:
    """The rating in a judge reply (last ``Rating: N``, else the last number), if within [lo, hi]."""
    found = re.findall(r"rating\s*[:=]?\s*\(?\s*(\d+(?:\.\d+)?)", text or "", re.IGNORECASE)
    if not found:
        found = re.findall(r"\d+(?:\.\d+)?", text or "")
    if not found:
        return None
    value = float(found[-1])
    return value if lo <= value <= hi else None


def parse_pair(text: str, lo: float = 1, hi: float = 10) -> tuple[float, float] | None:
    """Two scores from the last line of a judge reply holding at least two numbers."""
    for line in reversed((text or "").strip().splitlines()):
        nums = re.findall(r"\d+(?:\.\d+)?", line)
        if len(nums) >= 2:
            a, b = float(nums[0]), float(nums[1])
            return (a, b) if lo <= a <= hi and lo <= b <= hi else None
    return None


def _groups(records, input, pred_key, ref_key):
    """Group by (audio_id, instruction): first prediction, all distinct references, first record."""
    groups: dict[tuple, dict] = {}
    for i, rec in enumerate(records):
        key = (str(get_field(rec, "audio_id", input, i, types=())), get_field(rec, "instruction", input, i))
        refs = get_text_list(rec, ref_key, input, i)
        g = groups.setdefault(key, {"index": i, "audio_id": key[0], "question": key[1],
                                    "prediction": get_prediction(rec, pred_key, input, i), "references": [],
                                    "record": rec})
        g["references"] += [r for r in refs if r not in g["references"]]
    return list(groups.values())


def evaluate_graded(input: str, client: OpenAICompatClient, output: str | None = None,
                    pred_key: str = DEFAULT_PRED_KEY, ref_key: str = DEFAULT_REF_KEY,
                    structured: bool = False) -> dict:
    """Judge ratings 0-5 per (audio_id, instruction) group against its references."""
    records, structured_metrics = load_predictions(input, pred_key, structured)
    groups = _groups(records, input, pred_key, ref_key)
    asked = [g for g in groups if g["prediction"].strip()]  # an empty answer is rated 0 without a call
    replies = client.chat_many([graded_messages(g["question"], g["references"], g["prediction"]) for g in asked],
                               max_tokens=256)
    reply_of = {id(g): r for g, r in zip(asked, replies)}
    details = []
    for g in groups:
        reply = reply_of.get(id(g))
        details.append({k: g[k] for k in ("index", "audio_id", "question", "references", "prediction")}
                       | {"judge_reply": reply, "rating": parse_rating(reply) if reply is not None else 0.0})
    ratings = [d["rating"] if d["rating"] is not None else 0.0 for d in details]
    mean = _mean(ratings)
    metrics = {"score_0_5": mean, "score_100": None if mean is None else mean * 20,
               "n_questions": len(details), "n_unparsed": sum(d["rating"] is None for d in details)}
    metrics.update(structured_metrics)
    return _finish("qa_graded", metrics, _meta(input, records, pred_key, ref_key, client), details,
                   input, output, ".graded.json")


def evaluate_chat(input: str, client: OpenAICompatClient, output: str | None = None,
                  pred_key: str = DEFAULT_PRED_KEY, ref_key: str = DEFAULT_REF_KEY,
                  description_key: str = "meta_info", structured: bool = False) -> dict:
    """Pairwise 1-10 judge scores for the reference and the prediction (AIR-Bench chat style)."""
    records, structured_metrics = load_predictions(input, pred_key, structured)
    groups = _groups(records, input, pred_key, ref_key)
    convs = [chat_messages(g["question"], g["references"][0], g["prediction"],
                           str(g["record"].get(description_key) or "N/A")) for g in groups]
    replies = client.chat_many(convs, max_tokens=32)
    details = []
    for g, reply in zip(groups, replies):
        pair = parse_pair(reply)
        details.append({k: g[k] for k in ("index", "audio_id", "question", "prediction")}
                       | {"reference": g["references"][0], "judge_reply": reply,
                          "reference_score": pair[0] if pair else None, "model_score": pair[1] if pair else None})
    ok = [d for d in details if d["model_score"] is not None]
    model = _mean([d["model_score"] for d in ok])
    metrics = {"model_score": model, "reference_score": _mean([d["reference_score"] for d in ok]),
               "score_100": None if model is None else model * 10,
               "n_questions": len(details), "n_unparsed": len(details) - len(ok)}
    metrics.update(structured_metrics)
    return _finish("qa_chat", metrics, _meta(input, records, pred_key, ref_key, client), details,
                   input, output, ".chat.json")


# ------------------------------------------------------------------------- yes / no
def yes_no(text: str) -> str | None:
    """``'yes'``/``'no'`` from the first yes/no word of a text, else ``None``."""
    m = re.search(r"\b(yes|no)\b", (text or "").lower())
    return m.group(1) if m else None


def evaluate_yesno(input: str, output: str | None = None, pred_key: str = DEFAULT_PRED_KEY,
                   ref_key: str = DEFAULT_REF_KEY, structured: bool = False) -> dict:
    """Yes/no accuracy over (audio_id, instruction) groups whose references are all yes/no."""
    records, structured_metrics = load_predictions(input, pred_key, structured)
    answers: dict[tuple, list[str]] = defaultdict(list)
    for i, rec in enumerate(records):
        key = (str(get_field(rec, "audio_id", input, i, types=())), get_field(rec, "instruction", input, i))
        answers[key] += [normalize_text(r) for r in get_text_list(rec, ref_key, input, i)]
    details, skipped = [], 0
    for g in _groups(records, input, pred_key, ref_key):
        refs = answers[(g["audio_id"], g["question"])]
        if not refs or any(r not in ("yes", "no") for r in refs):
            skipped += 1
            continue
        counts = Counter(refs)
        top = max(counts.values())
        accepted = sorted(a for a, c in counts.items() if c == top)
        pred = yes_no(g["prediction"])
        details.append({"index": g["index"], "audio_id": g["audio_id"], "question": g["question"],
                        "accepted": accepted, "prediction": g["prediction"], "parsed": pred,
                        "correct": pred in accepted})
    if not details:
        raise EvalInputError(f"{input}: no question has only yes/no reference answers in field {ref_key!r}")
    metrics = {"accuracy": _mean([d["correct"] for d in details]), "n_questions": len(details),
               "n_unparsable_predictions": sum(d["parsed"] is None for d in details),
               "n_groups_skipped_not_yes_no": skipped}
    metrics.update(structured_metrics)
    return _finish("qa_yesno", metrics, _meta(input, records, pred_key, ref_key, None), details,
                   input, output, ".yesno.json")


# ----------------------------------------------------------------------------- shared
def _mean(values) -> float | None:
    values = list(values)
    return float(sum(values) / len(values)) if values else None


def _breakdown(items, field) -> dict:
    groups = defaultdict(list)
    for it in items:
        if it.get(field) is not None:
            groups[str(it[field])].append(it["correct"])
    return {k: {"accuracy": _mean(v), "n": len(v)} for k, v in groups.items()}


def _meta(input, records, pred_key, ref_key, client) -> dict:
    meta = {"input": str(input), "n_records": len(records), "n_null_predictions": count_null(records, pred_key),
            "pred_key": pred_key, "ref_key": ref_key}
    if client is not None:
        meta.update(judge_model=client.model, judge_base_url=client.base_url)
    return meta


def _finish(task, metrics, meta, details, input, output, suffix) -> dict:
    result = make_result(task, metrics, meta, details=details)
    write_report(result, output or default_output(input, suffix))
    return result


class QACommands:
    """``mcq`` / ``graded`` / ``chat`` / ``yesno``; judge options are shared flags.

    Args:
        judge_base_url: OpenAI-compatible base URL, e.g. ``https://api.openai.com/v1``.
        judge_model: the judge model name.
        judge_api_key_env: name of the env variable holding the key (default OPENAI_API_KEY).
        judge_cache_dir: cache directory (default ``$FUSIONAUDIO_CACHE`` or ``~/.cache/fusionaudio``).
        judge_workers: concurrent requests.
        judge_max_retries: retries on 429/5xx/timeouts (exponential backoff).
        judge_timeout: seconds per request.
        no_cache: do not read or write the judge cache.
    """

    def __init__(self, judge_base_url: str | None = None, judge_model: str | None = None,
                 judge_api_key_env: str = "OPENAI_API_KEY", judge_cache_dir: str | None = None,
                 judge_workers: int = 8, judge_max_retries: int = 6, judge_timeout: float = 120.0,
                 no_cache: bool = False):
        self._judge = dict(judge_base_url=judge_base_url, judge_model=judge_model,
                           judge_api_key_env=judge_api_key_env, judge_cache_dir=judge_cache_dir,
                           judge_workers=judge_workers, judge_max_retries=judge_max_retries,
                           judge_timeout=judge_timeout, no_cache=no_cache)

    def _client(self, required: bool):
        if not self._judge["judge_base_url"] or not self._judge["judge_model"]:
            if required:
                raise SystemExit("this evaluation needs --judge_base_url and --judge_model")
            return None
        return client_from_args(**self._judge)

    def mcq(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, options_key="options",
            skip_bad_options=False, structured=False):
        """Multiple-choice accuracy (rules first, the judge for the rest when configured)."""
        return _summary(evaluate_mcq(input, output, pred_key, ref_key, options_key, self._client(False),
                                     skip_bad_options, structured))

    def graded(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, structured=False):
        """Judge rating 0-5 against the references."""
        return _summary(evaluate_graded(input, self._client(True), output, pred_key, ref_key, structured))

    def chat(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, description_key="meta_info",
             structured=False):
        """Pairwise 1-10 judge scores (AIR-Bench chat style)."""
        return _summary(evaluate_chat(input, self._client(True), output, pred_key, ref_key, description_key,
                                      structured))

    def yesno(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, structured=False):
        """Yes/no accuracy (no judge)."""
        return _summary(evaluate_yesno(input, output, pred_key, ref_key, structured))


def _summary(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if not isinstance(v, dict)}


def main():
    import fire

    run_cli(lambda: fire.Fire(QACommands))


if __name__ == "__main__":
    main()
