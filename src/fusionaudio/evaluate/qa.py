"""Question answering: multiple choice, judged open answers, pairwise chat judging, yes/no.

* ``mcq`` (AIR-Bench foundation style): options come from the record's ``options`` list or
  from the ``Options: [a, b, c, d]`` line of the instruction; the ground truth (option text or
  letter) becomes a letter. Free-form answers are aligned to a letter by rules first
  (``"B"``, ``"(B)"``, ``"B."``, ``"The answer is B"``, or exactly an option's text); only the
  rest go to the LLM judge. Accuracy overall, per ``task`` and per ``dataset``.
  ``--judge_all``: every answer goes to the judge as FusionAudio's AIR-Bench scripts do;
  ``--answer_lookup audio_id``: every question against the last answer on its audio file, as their
  ``foundation_score.py`` looks answers up.
* ``graded`` (AudioBench rubric 0-5, ``judge_score`` x20, ``success_rate``) and ``chat``
  (AIR-Bench chat, two 1-10 scores): see :mod:`.qa_judged`; ``--references FILE`` joins a
  separate references file on audio_id + instruction.
* judge prompts are template files (``--judge_prompt FILE``, :mod:`.judge_prompts`).
* ``yesno``: questions whose references are all yes/no; ground truth is the majority (a tie
  accepts either); the first yes/no word of the prediction is its answer.

CLI (judge flags go anywhere; the key is read from the env variable ``--judge_api_key_env``)::

    python -m fusionaudio.evaluate.qa mcq --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa graded --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa chat --input preds.json --judge_base_url URL --judge_model M
    python -m fusionaudio.evaluate.qa yesno --input preds.json
"""

from __future__ import annotations

import inspect

from fusionaudio.commands import print_result, run_command, subcommand_parser

import re
from collections import Counter, defaultdict

from fusionaudio.evaluate.judge import OpenAICompatClient, client_from_args
from fusionaudio.evaluate.judge_prompts import JudgePrompt, load_prompt
from fusionaudio.evaluate.qa_common import breakdown, finish, mean, meta, question_groups
from fusionaudio.evaluate.qa_judged import MAX_UNPARSED_SHARE, evaluate_chat, evaluate_graded, parse_chat, parse_graded  # noqa: F401 - parse_* re-exported
from fusionaudio.evaluate.records import (
    DEFAULT_PRED_KEY,
    DEFAULT_REF_KEY,
    EvalInputError,
    get_field,
    get_prediction,
    get_text_list,
    load_predictions,
    normalize_text,
)

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


# The instruction prefix FusionAudio's foundation_alignment.py removes from the question before asking the
# judge (it differs from the first line of FusionAudio's own eval files, so there nothing is removed).
ORIGINAL_MCQ_PREFIX = ("Choose the most suitable answer from options A, B, C, and D to respond the question in next "
                       "line, you may only choose A or B or C or D.")


def mcq_messages(question: str, answer: str, options: list[str], prompt: JudgePrompt | None = None) -> list[dict]:
    """Judge prompt (the ``mcq`` template): map a free-form answer to one option letter."""
    prompt = prompt or load_prompt("mcq")
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    content = prompt.render(question=question, answer=answer, options=opts, letters=", ".join(LETTERS[: len(options)]))
    return [{"role": "user", "content": content}]


def original_judge_view(instruction: str) -> tuple[str, list[str]]:
    """The question and options FusionAudio's alignment script shows the judge: the instruction without
    :data:`ORIGINAL_MCQ_PREFIX`, stripped; options = the text after the last ``"Options: "`` minus its first and
    last character, split on every comma, stripped, the first four non-empty kept (so ``[[0.4, 2.3], ...]``
    becomes ``[0.4``, ``2.3]``, ... as there)."""
    question = instruction.replace(ORIGINAL_MCQ_PREFIX, "").strip()
    raw = question.split("Options: ")[-1].strip()[1:-1].split(",")
    return question, [c.strip() for c in raw[:4] if c.strip()]


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
                 structured: bool = False, judge_all: bool = False, judge_prompt: str | None = None,
                 answer_lookup: str = "question") -> dict:
    """Multiple-choice accuracy; without ``client`` unresolved answers count as wrong (and are counted).

    A record whose options cannot be parsed or do not contain its ground truth is an error, or,
    with ``skip_bad_options``, is left out and counted (``n_skipped_bad_options``).

    ``judge_all`` scores as FusionAudio's AIR-Bench foundation scripts do: no rules first, every answer
    goes to the judge (temperature 0, 1 output token) with the question and options of
    :func:`original_judge_view`, and an answer is right when the reply is exactly the ground-truth
    letter. Records whose prediction is null are left out (the original drops them) and counted.

    ``answer_lookup``: ``question`` (default) scores each question against its own answer; ``audio_id``
    against the answer of the last record on the same audio file, as FusionAudio's
    ``foundation_score.py`` looks the answer up by audio file alone (see :func:`lookup_by_audio_id`).
    """
    if answer_lookup not in ("question", "audio_id"):
        raise EvalInputError(f"answer_lookup must be 'question' or 'audio_id', not {answer_lookup!r}")
    if judge_all and client is None:
        raise EvalInputError("judge_all needs a judge (--judge_base_url and --judge_model)")
    prompt = load_prompt("mcq", judge_prompt) if client is not None else None
    records, structured_metrics = load_predictions(input, pred_key, structured)
    items, skipped, file_answer = [], [], {}
    for i, rec in enumerate(records):
        audio_id = str(get_field(rec, "audio_id", input, i, types=())) if answer_lookup == "audio_id" else None
        try:
            question, options, gt = _mcq_options(rec, i, input, ref_key, options_key)
        except EvalInputError as e:
            if not skip_bad_options:
                raise
            skipped.append({"index": i, "error": str(e)})
            file_answer[audio_id] = (i, None)
            continue
        file_answer[audio_id] = (i, gt)
        pred = get_prediction(rec, pred_key, input, i)
        if judge_all and rec.get(pred_key) is None:
            skipped.append({"index": i, "error": "null prediction (left out, as the original does)"})
            continue
        items.append({"index": i, "question": question, "options": options, "gt": gt, "prediction": pred,
                      "choice": rule_match(pred, options), "how": "rule", "task": rec.get("task"),
                      "dataset": rec.get("dataset"), "audio_id": audio_id})
    lookup_metrics = lookup_by_audio_id(items, skipped, file_answer) if answer_lookup == "audio_id" else {}
    if not items:
        raise EvalInputError(f"{input}: no record with usable options")
    if judge_all:
        _judge_every_answer(items, client, prompt)
    else:
        todo = [it for it in items if it["choice"] is None and it["prediction"].strip()]
        if todo and client is not None:
            replies = client.chat_many([mcq_messages(it["question"], it["prediction"], it["options"], prompt)
                                        for it in todo], max_tokens=8)
            for it, reply in zip(todo, replies):
                it["judge_reply"] = reply
                it["choice"], it["how"] = rule_match(reply, it["options"]), "llm"
    for it in items:
        if it["choice"] is None:
            it["how"] = "unresolved"
        it["correct"] = it["choice"] == it["gt"]
    metrics = {"accuracy": mean([it["correct"] for it in items]),
               "n_rule_matched": sum(it["how"] == "rule" for it in items),
               "n_llm_aligned": sum(it["how"] == "llm" and it["choice"] is not None for it in items),
               "n_unresolved": sum(it["how"] == "unresolved" for it in items),
               "n_skipped_bad_options": sum("null prediction" not in s["error"] and not s["error"].startswith(
                   LOOKUP_SKIP) for s in skipped),
               "n_skipped_null_predictions": sum("null prediction" in s["error"] for s in skipped),
               **lookup_metrics, "by_task": breakdown(items, "task"), "by_dataset": breakdown(items, "dataset")}
    for it in items:
        del it["question"], it["options"]
        if it["audio_id"] is None:
            del it["audio_id"]
    meta_ = meta(input, records, pred_key, ref_key, client, prompt) | {"judge_all": judge_all,
                                                                       "answer_lookup": answer_lookup}
    metrics.update(structured_metrics)
    return finish("qa_mcq", metrics, meta_, items + skipped, input, output, ".mcq.json")


LOOKUP_SKIP = "answer lookup by audio_id"


def lookup_by_audio_id(items: list[dict], skipped: list[dict], file_answer: dict) -> dict:
    """Score every question against ``file_answer[audio_id]`` = ``(index, letter)`` of the last record on its
    audio file (FusionAudio's ``foundation_score.py`` keys its answers by audio file alone, so a later
    question on a file overwrites the earlier ones). A question whose file's last record has no usable
    answer is left out, as the original leaves out a question without a ground-truth letter. Changes
    ``items`` in place (``gt`` becomes the looked-up letter, ``own_gt`` keeps the question's own where
    they differ); returns the counts the report states."""
    kept, n_other, n_changed = [], 0, 0
    for it in items:
        last, gt = file_answer[it["audio_id"]]
        if gt is None:
            skipped.append({"index": it["index"], "error": f"{LOOKUP_SKIP}: the last question on this file "
                            f"(record {last}) has no usable answer (left out, as the original does)"})
            continue
        n_other += last != it["index"]
        if gt != it["gt"]:
            it["own_gt"], it["gt"] = it["gt"], gt
            n_changed += 1
        kept.append(it)
    n_left_out = len(items) - len(kept)
    items[:] = kept
    return {"n_lookup_other_question": n_other, "n_lookup_changed_answer": n_changed,
            "n_skipped_lookup_no_answer": n_left_out}


def _judge_every_answer(items, client, prompt) -> None:
    convs = []
    for it in items:
        question, options = original_judge_view(it["question"])
        convs.append(mcq_messages(question, it["prediction"], options, prompt))
    replies = client.chat_many(convs, temperature=0.0, max_tokens=1)
    for it, reply in zip(items, replies):
        it["judge_reply"], it["how"] = reply, "llm"
        it["choice"] = reply.strip() if reply.strip() in LETTERS else None


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
    for g in question_groups(records, input, pred_key, ref_key):
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
    metrics = {"accuracy": mean([d["correct"] for d in details]), "n_questions": len(details),
               "n_unparsable_predictions": sum(d["parsed"] is None for d in details),
               "n_groups_skipped_not_yes_no": skipped}
    metrics.update(structured_metrics)
    return finish("qa_yesno", metrics, meta(input, records, pred_key, ref_key, None), details,
                   input, output, ".yesno.json")


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
        judge_prompt: a judge prompt template file (named fields; see ``fusionaudio.evaluate.judge_prompts``);
            the report records its sha256 and marks the scores as not comparable with published ones.
    """

    def __init__(self, judge_base_url: str | None = None, judge_model: str | None = None,
                 judge_api_key_env: str = "OPENAI_API_KEY", judge_cache_dir: str | None = None,
                 judge_workers: int = 8, judge_max_retries: int = 6, judge_timeout: float = 120.0,
                 no_cache: bool = False, judge_prompt: str | None = None):
        self._prompt = judge_prompt
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
            skip_bad_options=False, structured=False, judge_all=False, answer_lookup="question"):
        """Multiple-choice accuracy (rules first, the judge for the rest; ``--judge_all``: every answer to the
        judge at temperature 0 with 1 output token, as the original AIR-Bench foundation scripts).

        Args:
            answer_lookup: ``question`` (each question against its own answer) or ``audio_id`` (against the
                answer of the last question on the same audio file, as the original foundation_score.py).
        """
        return _summary(evaluate_mcq(input, output, pred_key, ref_key, options_key, self._client(judge_all),
                                     skip_bad_options, structured, judge_all, self._prompt, answer_lookup))

    def graded(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, structured=False,
               references=None, max_unparsed=MAX_UNPARSED_SHARE):
        """Judge rating 0-5 against the references (``--references FILE``: two-file mode; the run fails when more
        than ``--max_unparsed`` of the judge replies cannot be parsed)."""
        return _summary(evaluate_graded(input, self._client(True), output, pred_key, ref_key, structured,
                                        references, self._prompt, max_unparsed))

    def chat(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, description_key="meta_info",
             structured=False, references=None, max_unparsed=MAX_UNPARSED_SHARE):
        """Pairwise 1-10 judge scores (AIR-Bench chat; ``--references FILE``: two-file mode; the run fails when
        more than ``--max_unparsed`` of the judge replies cannot be parsed)."""
        return _summary(evaluate_chat(input, self._client(True), output, pred_key, ref_key, description_key,
                                      structured, references, self._prompt, max_unparsed))

    def yesno(self, input, output=None, pred_key=DEFAULT_PRED_KEY, ref_key=DEFAULT_REF_KEY, structured=False):
        """Yes/no accuracy (no judge)."""
        return _summary(evaluate_yesno(input, output, pred_key, ref_key, structured))


def _summary(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if not isinstance(v, dict)}


def main(argv=None) -> int:
    methods = {name: getattr(QACommands, name) for name in ("mcq", "graded", "chat", "yesno")}
    parser = subcommand_parser(methods, "python -m fusionaudio.evaluate.qa", QACommands.__doc__.split("\n")[0],
                               common=QACommands.__init__, common_doc=QACommands.__doc__)
    args = vars(parser.parse_args(argv))
    init = {k: args[k] for k in inspect.signature(QACommands.__init__).parameters if k in args}

    def run():
        commands = QACommands(**init)
        method = getattr(commands, args["_command"])
        print_result(method(**{k: args[k] for k in inspect.signature(method).parameters if k in args}))

    return run_command(run)

if __name__ == "__main__":
    raise SystemExit(main())
