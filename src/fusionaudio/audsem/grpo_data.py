"""Records and prompts for AudSemThinker GRPO: questions about audio clips with a reference answer.

A data file is a JSON list or JSONL (read with :mod:`fusionaudio.records`) of objects:

* ``audio_id``: the clip, absolute or relative to the data file's folder;
* ``question`` (or, as in the SFT records, ``instruction`` with an optional ``input``): the question;
* ``answer``: the reference answer (non-empty; compared by :func:`fusionaudio.audsem.rewards.accuracy`);
* ``choices`` (optional): a list of options, lettered ``A.``, ``B.``, ... or a ``{"A": "...", ...}`` object;
  appended to the question as ``"\\nChoices:\\nA. ...\\nB. ..."``, the layout of the upstream
  multiple-choice shards.

Every record is checked before training: the fields, the clip (decoded with the card's resampling,
:func:`fusionaudio.audsem.processor.load_audio`; clips under 1,000 samples at 16 kHz are rejected, upstream
drops them) and the prompt length in tokens, audio tokens included (at most ``max_prompt_length``: a prompt
is never cut, which would cut the audio). Bad records are listed by index with their problem; with
``skip_bad`` they are dropped with a warning instead.

The prompt is ``[system prompt] [user: audio, question]``; with ``prepend_to_prompt`` the question follows
the multiple-choice instruction of :func:`prepend_instruction` (the target length written in, not the
literal ``{args.target_length}`` upstream sends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fusionaudio.audio import AudioError
from fusionaudio.audsem.config import SYSTEM_PROMPT
from fusionaudio.audsem.processor import build_conversation, load_audio
from fusionaudio.records import RecordError, read_records

logger = logging.getLogger(__name__)

__all__ = ["GRPORecord", "MIN_SAMPLES", "question_text", "prepend_instruction", "load_grpo_records",
           "clean_messages", "prompt_ids", "load_clip", "dataset_rows"]

#: Clips shorter than this many samples (after resampling) are rejected, as upstream drops them.
MIN_SAMPLES = 1000


@dataclass
class GRPORecord:
    """A checked GRPO example: the file position, the clip, the user text (instruction included) and answer."""

    index: int
    audio_path: str
    user_text: str
    answer: str


def question_text(row: dict) -> str:
    """The question of a record with its lettered ``choices`` appended; ``ValueError`` saying what is wrong."""
    question = row.get("question")
    if question is None:
        question = row.get("instruction")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("'question' (or 'instruction') missing or not a non-empty string")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise ValueError("'input' is not a string")
        question = f"{question.strip()}\n{extra.strip()}" if extra and extra.strip() else question
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' is not a non-empty string")
    choices = row.get("choices")
    if choices is None:
        return question.strip()
    if isinstance(choices, list) and choices and all(isinstance(c, str) and c.strip() for c in choices):
        lines = [f"{chr(65 + i)}. {c.strip()}" for i, c in enumerate(choices)]
    elif isinstance(choices, dict) and choices and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                      for k, v in choices.items()):
        lines = [f"{k}. {v.strip()}" for k, v in choices.items()]
    else:
        raise ValueError("'choices' must be a non-empty list of strings or an object of strings")
    if len(lines) > 26:
        raise ValueError(f"'choices' has {len(lines)} options; at most 26 (A-Z)")
    return question.strip() + "\nChoices:\n" + "\n".join(lines)


def prepend_instruction(semantic_elements: bool, target_length: int) -> str:
    """The multiple-choice instruction (upstream ``--prepend_to_prompt``), with ``target_length`` filled in."""
    parts = [
        "You are given a question and an audio clip. Your task is to answer the question based on the audio clip.",
        "The answers are multiple choice, so you need to select the correct answer from the given options.",
        "First, think about the question and the audio clip and put your thoughts in <think> and </think> tags.",
        f"Your thinking process should be approximately {int(target_length)} words long.",
    ]
    if semantic_elements:
        parts.append("Then reason about the semantic elements involved in the audio clip and put your reasoning in "
                     "<semantic_elements> and </semantic_elements> tags.")
    parts += ["Then answer the question based on the audio clip, put your answer in <answer> and </answer> tags.",
              "Question: "]
    return " ".join(parts)


def clean_messages(messages) -> list[dict]:
    """Messages with the ``None`` fields a datasets table adds to content items removed."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in item.items() if v is not None} for item in content]
        out.append({"role": m["role"], "content": content})
    return out


def prompt_ids(processor, messages, num_audio_tokens: int) -> list[int]:
    """Token ids of the rendered prompt with its ``<|AUDIO|>`` placeholder expanded to ``num_audio_tokens``."""
    text = processor.apply_chat_template(clean_messages(messages), add_generation_prompt=True)
    return processor.encode(processor.expand_audio_tokens([text], [num_audio_tokens])[0])


def load_clip(path, processor, resampler: str = "sinc"):
    """The clip as the GRPO trainer feeds it: mono at the processor's rate, not padded, cut at 30 s."""
    wave = load_audio(path, processor.sampling_rate, min_seconds=0.0, resampler=resampler)
    if wave.shape[0] < MIN_SAMPLES:
        raise AudioError(f"{wave.shape[0]} samples at {processor.sampling_rate} Hz; clips under {MIN_SAMPLES} "
                         "samples are not used", path)
    return wave


def _check_row(row, path: Path, processor, user_prefix: str, system_prompt: str, resampler: str,
               max_prompt_length: int) -> GRPORecord | str:
    if not isinstance(row, dict):
        return "not an object"
    problems = []
    try:
        user_text = user_prefix + question_text(row)
    except ValueError as exc:
        problems.append(str(exc))
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        problems.append("'answer' missing or not a non-empty string")
    audio_id = row.get("audio_id")
    if not isinstance(audio_id, str) or not audio_id.strip():
        problems.append("'audio_id' missing or not a non-empty string")
        return "; ".join(problems)
    audio_path = Path(audio_id) if Path(audio_id).is_absolute() else path.parent / audio_id
    try:
        wave = load_clip(audio_path, processor, resampler)
    except AudioError as exc:
        problems.append(f"audio {exc}")
    if problems:
        return "; ".join(problems)
    n_audio = int(processor.audio_features([wave])["num_audio_tokens"][0])
    n_tokens = len(prompt_ids(processor, build_conversation(user_text, True, system_prompt), n_audio))
    if n_tokens > max_prompt_length:
        return (f"the prompt is {n_tokens} tokens ({n_audio} of them audio), over max_prompt_length "
                f"{max_prompt_length} (a prompt is never cut: raise max_prompt_length or shorten the clip)")
    return GRPORecord(-1, str(audio_path), user_text, answer.strip())


def load_grpo_records(data_path, processor, *, semantic_elements: bool = False, prepend_to_prompt: bool = False,
                      target_length: int = 100, system_prompt: str = SYSTEM_PROMPT, resampler: str = "sinc",
                      max_prompt_length: int = 512, skip_bad: bool = False) -> list[GRPORecord]:
    """Read and check every record of ``data_path`` (see the module docstring); :class:`RecordError` lists
    the bad ones unless ``skip_bad``."""
    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    rows, bad = read_records(path)
    if not rows:
        raise RecordError(f"{path}: no records")
    prefix = prepend_instruction(semantic_elements, target_length) if prepend_to_prompt else ""
    records, errors = [], [str(b) for b in bad.values()]
    for i, row in enumerate(rows):
        if i in bad:
            continue
        checked = _check_row(row, path, processor, prefix, system_prompt, resampler, max_prompt_length)
        if isinstance(checked, str):
            errors.append(f"record {i}: {checked}")
            continue
        checked.index = i
        records.append(checked)
        if (i + 1) % 1000 == 0:
            logger.info("checked %d of %d records", i + 1, len(rows))
    if errors:
        listing = "\n  ".join(errors[:50]) + (f"\n  (+{len(errors) - 50} more)" if len(errors) > 50 else "")
        if not skip_bad:
            raise RecordError(f"{path}: {len(errors)} of {len(rows)} records are invalid (pass --skip_bad_records "
                              f"to leave them out):\n  {listing}")
        logger.warning("%s: leaving out %d of %d invalid records:\n  %s", path, len(errors), len(rows), listing)
    if not records:
        raise RecordError(f"{path}: no valid records")
    return records


def dataset_rows(records: list[GRPORecord], system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """One TRL dataset row per record: the conversational ``prompt`` (audio placeholder + text), ``answer``
    (for the rewards), ``audio_path`` and ``record`` (its index in the data file)."""
    return [{"prompt": build_conversation(r.user_text, True, system_prompt), "answer": r.answer,
             "audio_path": r.audio_path, "record": r.index} for r in records]
