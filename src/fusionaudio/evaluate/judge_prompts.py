"""Judge prompts as template files with named fields.

A template is a text file with ``{field}`` placeholders (``str.format`` syntax; write a literal brace as
``{{`` / ``}}``). The defaults (ours) live in ``fusionaudio/evaluate/data/prompts/``; ``--judge_prompt FILE``
replaces one. Fields per kind (aliases in brackets are the names the FusionAudio / AudioBench / AIR-Bench
scripts use, so their templates can be pasted in with their own placeholders):

* ``mcq``: ``question``, ``answer``, ``options`` (lines ``A. option``), ``letters`` (``A, B, C, D``);
* ``graded``: ``question``, ``prediction``, ``references`` (lines ``- ref``), ``reference_text`` [``reference``]
  (the layout of FusionAudio's AudioBench judge: the single reference as it is, or ``"Multiple reference
  answers are provided:"`` followed by ``Reference i: ...`` items separated by ``---`` lines; upstream
  AudioBench names the field ``reference``);
* ``chat``: ``question``, ``prediction`` [``assistant2_answer``], ``reference`` [``assistant1_answer``],
  ``description`` [``audio_description``].

Every report records the template's source and sha256. Published scores were produced with the original
scripts' prompts, so a report made with any other template (ours included) is marked as not comparable
with them; see ``docs/evaluation.md`` for where those prompts are.
"""

from __future__ import annotations

import hashlib
import logging
import string
from dataclasses import dataclass
from pathlib import Path

from fusionaudio.evaluate.records import EvalInputError

logger = logging.getLogger(__name__)

PROMPT_DIR = Path(__file__).with_name("data") / "prompts"
FIELDS = {
    "mcq": {"question", "answer", "options", "letters"},
    "graded": {"question", "prediction", "references", "reference_text", "reference"},
    "chat": {"question", "prediction", "reference", "description", "assistant1_answer", "assistant2_answer",
             "audio_description"},
}
REQUIRED = {"mcq": ({"answer"},), "graded": ({"prediction", "assistant2_answer"},),
            "chat": ({"prediction", "assistant2_answer"},)}
NOT_COMPARABLE = ("not comparable with published scores (they used the original scripts' judge prompt; "
                  "plug it in with --judge_prompt FILE)")


@dataclass(frozen=True)
class JudgePrompt:
    kind: str
    text: str
    source: str
    is_default: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, **values) -> str:
        return self.text.format_map(values)

    def meta(self) -> dict:
        note = ("our default prompt: " if self.is_default else "custom prompt: ") + NOT_COMPARABLE
        return {"judge_prompt": self.source, "judge_prompt_sha256": self.sha256, "judge_prompt_note": note}


def load_prompt(kind: str, path: str | None = None) -> JudgePrompt:
    """The template for ``kind`` (``mcq``, ``graded``, ``chat``): ``path`` if given, else our default.

    Raises :class:`EvalInputError` naming the file when it is missing, uses an unknown field, has
    unbalanced braces, or lacks the prediction field.
    """
    if kind not in FIELDS:
        raise ValueError(f"unknown judge prompt kind {kind!r}; choose from {sorted(FIELDS)}")
    p = Path(path) if path else PROMPT_DIR / f"{kind}.txt"
    if not p.is_file():
        raise EvalInputError(f"{p}: judge prompt file not found")
    text = p.read_text(encoding="utf-8")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise EvalInputError(f"{p}: not a valid template ({e}; write literal braces as {{{{ and }}}})") from None
    unknown = sorted(n for n in used if n not in FIELDS[kind])
    if unknown:
        raise EvalInputError(f"{p}: unknown field(s) {unknown} for a {kind} prompt (fields: {sorted(FIELDS[kind])})")
    for group in REQUIRED[kind]:
        if not used & group:
            raise EvalInputError(f"{p}: a {kind} prompt must use one of the fields {sorted(group)}")
    prompt = JudgePrompt(kind, text, "default:" + kind if not path else str(p), not path)
    if path:
        logger.warning("judge prompt %s (sha256 %s): %s", p, prompt.sha256[:12], NOT_COMPARABLE)
    return prompt


def reference_text(references: list[str]) -> str:
    """References laid out as AudioBench's judge shows them (one as it is; several numbered, ``---`` apart)."""
    if not references:
        return "N/A"
    if len(references) == 1:
        return references[0]
    items = "\n---\n".join(f"Reference {i + 1}: {r}" for i, r in enumerate(references))
    return "Multiple reference answers are provided:\n" + items
