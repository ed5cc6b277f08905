"""The AudSemThinker structured answer format: instruction templates, a tolerant parser, a compliance metric.

AudSemThinker (arXiv 2505.14142) answers in three tagged sections::

    <think>reasoning ...</think>
    <semantic_elements>who / what / how / when / where descriptors ...</semantic_elements>
    <answer>the concise caption or answer</answer>

The instruction that asks for this format is part of the model's interface; its wording (taken from the
public AudSemThinker code, see ``fusionaudio.audsem.config``) lives here as data so that GAMA-family
models can be prompted with the same request (``--structured``).

Parsing rules (all documented in :func:`parse_structured`):

* tag names are case-insensitive and may carry inner blanks (``< Answer >``); ``<thinking>`` is accepted
  as an alias of ``<think>`` (the public model card names the phase that way);
* a *block* is an opening tag followed by its closing tag; an opening tag repeated before the close
  restarts the block (``<answer>a <answer>b</answer>`` gives ``b``);
* **when a section appears more than once, the last complete block wins** (an echoed instruction such
  as "put your answer in <answer> and </answer> tags" early in the text is thereby ignored);
* a section with no complete block falls back to its last unclosed opening tag (content runs to the
  next recognised tag or to the end: a truncated generation), or to a closing tag without an opener
  (content runs from the previous recognised tag or the start); both are reported in ``issues`` and
  make the parse incomplete;
* a parse is **complete** when all the variant's sections exist as closed blocks with non-empty content
  and none of the chosen blocks contains another section's tags (nesting / interleaving is garbled output).

Two variants exist upstream: ``"three"`` (think / semantic_elements / answer, the SFT models) and ``"two"``
(``<think>..</think>\n<answer>..</answer>``, the GRPO model trained without semantic elements). With
``variant="two"`` a ``<semantic_elements>`` section is parsed when present but not required.
:func:`strict_format` is the upstream GRPO format check (the whole text must be the variant's blocks in
order, separated only by whitespace, tags exactly lower-case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SECTIONS",
    "CAPTION_INSTRUCTION",
    "QA_INSTRUCTION",
    "PROMPT_MODES",
    "build_instruction",
    "structured_instruction",
    "parse_structured",
    "parse_semantic_elements",
    "answer_text",
    "compliance_rate",
    "strict_format",
    "VARIANTS",
]

SECTIONS = ("think", "semantic_elements", "answer")
VARIANTS = {"three": SECTIONS, "two": ("think", "answer")}

# Wording used by the public AudSemThinker evaluation code for captioning (AudioBench runner,
# model "audsemthinker"); a question, when given, is appended as " Question: {question}".
CAPTION_INSTRUCTION = (
    "You are given an audio clip. Your task is to describe the audio. "
    "First, think about the audio clip and put your thoughts in <think> and </think> tags. "
    "Then reason about the semantic elements involved in the audio clip and put your reasoning in "
    "<semantic_elements> and </semantic_elements> tags. "
    "Finally, describe the audio based on the audio clip, putting your description in <answer> and </answer> tags."
)

# Wording of the question-answering prefix in the public AudSemThinker training / MMAU code
# (``--prepend_to_prompt --semantic_elements``); the question follows directly after the final space.
QA_INSTRUCTION = (
    "You are given a question and an audio clip. Your task is to answer the question based on the audio clip. "
    "First, think about the question and the audio clip and put your thoughts in <think> and </think> tags. "
    "Then reason about the semantic elements involved in the audio clip and put your reasoning in "
    "<semantic_elements> and </semantic_elements> tags. "
    "Then answer the question based on the audio clip, put your answer in <answer> and </answer> tags. "
)

PROMPT_MODES = ("caption", "qa", "raw")


def build_instruction(question: str | None, mode: str = "caption") -> str:
    """Return the user-turn text for ``question`` under a prompt ``mode``.

    * ``"caption"``: :data:`CAPTION_INSTRUCTION`, plus ``" Question: {question}"`` when a question is given
      (how the public evaluation code prompts the general ``gijs/audsemthinker`` model);
    * ``"qa"``: :data:`QA_INSTRUCTION` immediately followed by the question (required);
    * ``"raw"``: the question unchanged (how ``gijs/audsemthinker-qa`` was evaluated).
    """
    question = (question or "").strip()
    if mode == "caption":
        return f"{CAPTION_INSTRUCTION} Question: {question}" if question else CAPTION_INSTRUCTION
    if mode == "qa":
        if not question:
            raise ValueError("prompt mode 'qa' needs a non-empty question")
        return QA_INSTRUCTION + question
    if mode == "raw":
        if not question:
            raise ValueError("prompt mode 'raw' needs a non-empty question")
        return question
    raise ValueError(f"unknown prompt mode {mode!r}; expected one of {PROMPT_MODES}")


def structured_instruction(question: str | None) -> str:
    """The instruction for asking any model (e.g. GAMA with ``--structured``) for the three-section format.

    Same as ``build_instruction(question, "qa")`` for a question, and the captioning instruction without one.
    """
    question = (question or "").strip()
    return build_instruction(question, "qa" if question else "caption")


# --------------------------------------------------------------------------------------------- parsing

_TAG_RE = re.compile(r"<\s*(/?)\s*(think|thinking|semantic[_ -]?elements|answer)\s*>", re.IGNORECASE)


def _canonical(name: str) -> str:
    name = name.lower()
    if name.startswith("think"):
        return "think"
    return "answer" if name == "answer" else "semantic_elements"


@dataclass
class _Tag:
    name: str
    closing: bool
    start: int
    end: int


def _tags(text: str) -> list[_Tag]:
    return [
        _Tag(_canonical(m.group(2)), bool(m.group(1)), m.start(), m.end()) for m in _TAG_RE.finditer(text)
    ]


def _required(variant: str) -> tuple[str, ...]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown structured variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


def parse_structured(text: str, variant: str = "three") -> dict:
    """Parse a structured answer (``variant``: ``"three"`` sections or ``"two"``); never raises on malformed text.

    Returns a dict with:

    * ``think``, ``semantic_elements``, ``answer``: the stripped section text, or ``None`` when the section
      is absent (an empty block gives ``""``);
    * ``complete``: ``True`` when all the variant's sections are closed, non-empty, non-nested blocks
      (``semantic_elements`` is always returned, ``None`` when absent);
    * ``semantic``: ``parse_semantic_elements(semantic_elements)`` (``{}`` when absent);
    * ``extra``: the stripped text outside every recognised tag and block (``""`` when none);
    * ``issues``: human-readable notes on every anomaly found (unclosed, unopened, repeated, empty, nested).

    See the module docstring for the rules (last complete block wins, aliases, case).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_structured expects a str, got {type(text).__name__}")
    required = _required(variant)
    tags = _tags(text)
    issues: list[str] = []
    complete_blocks: dict[str, list[tuple[int, int, int, int]]] = {s: [] for s in SECTIONS}
    nested: set[tuple[str, int]] = set()  # (section, opening position) of blocks holding other section tags
    open_at: dict[str, _Tag | None] = {s: None for s in SECTIONS}
    unclosed: dict[str, tuple[int, int, int, int]] = {}
    unopened: dict[str, tuple[int, int, int, int]] = {}

    for i, tag in enumerate(tags):
        if not tag.closing:
            if open_at[tag.name] is not None:
                issues.append(f"<{tag.name}> opened again before being closed; the earlier opening is dropped")
            open_at[tag.name] = tag
            continue
        opener = open_at[tag.name]
        if opener is not None:
            inner = tags[tags.index(opener) + 1 : i]
            if any(t.name != tag.name for t in inner):
                issues.append(f"<{tag.name}> block contains other section tags (nested or interleaved)")
                nested.add((tag.name, opener.start))
            complete_blocks[tag.name].append((opener.start, opener.end, tag.start, tag.end))
            open_at[tag.name] = None
        else:
            # Closing tag without an opener: the section runs from the previous recognised tag (or the start).
            prev_end = tags[i - 1].end if i > 0 else 0
            unopened[tag.name] = (tag.start, prev_end, tag.start, tag.end)
            issues.append(f"</{tag.name}> without an opening tag")

    for name, opener in open_at.items():
        if opener is not None:
            later = [t.start for t in tags if t.start > opener.start and t.name != name]
            stop = min(later) if later else len(text)
            unclosed[name] = (opener.start, opener.end, stop, stop)
            issues.append(f"<{name}> is never closed")

    result: dict = {"complete": True}
    used_spans: list[tuple[int, int]] = [(t.start, t.end) for t in tags]
    for name in SECTIONS:
        blocks = complete_blocks[name]
        if len(blocks) > 1:
            issues.append(f"<{name}> appears {len(blocks)} times; the last complete block is used")
        span = blocks[-1] if blocks else unclosed.get(name) or unopened.get(name)
        for b in blocks:
            used_spans.append((b[0], b[3]))
        if name in unclosed:
            used_spans.append((unclosed[name][0], unclosed[name][2]))
        if name in unopened:
            used_spans.append((unopened[name][1], unopened[name][3]))
        if span is None:
            result[name] = None
            if name in required:
                result["complete"] = False
                issues.append(f"<{name}> section is missing")
            continue
        content = text[span[1] : span[2]].strip()
        # Stray section tags left inside the content (garbled nesting) are removed from the value.
        content = _TAG_RE.sub("", content).strip()
        result[name] = content
        if name in required and (not blocks or (name, span[0]) in nested):
            result["complete"] = False
        if not content:
            result["complete"] = result["complete"] and name not in required
            issues.append(f"<{name}> section is empty")

    result["semantic"] = parse_semantic_elements(result["semantic_elements"] or "")
    result["extra"] = _outside(text, used_spans)
    result["issues"] = issues
    return result


def _outside(text: str, spans: list[tuple[int, int]]) -> str:
    keep = [True] * len(text)
    for a, b in spans:
        for k in range(max(a, 0), min(b, len(text))):
            keep[k] = False
    out = "".join(c for c, k in zip(text, keep) if k)
    return re.sub(r"\s+", " ", out).strip()


def answer_text(text: str) -> str:
    """The answer to show a user, from any model output.

    The ``<answer>`` section when present (a closed block, else an unclosed or unopened one, as in
    :func:`parse_structured`); **otherwise the text outside every recognised tag and section**, whitespace
    collapsed, which is the whole output for a model that ignored the format (and ``""`` when a structured
    output was cut off before its answer).
    """
    parsed = parse_structured(text)
    if parsed["answer"] is not None:
        return parsed["answer"]
    return parsed["extra"]


def compliance_rate(texts, variant: str = "three") -> float:
    """Share of ``texts`` whose parse is complete (see :func:`parse_structured`), in [0, 1].

    Raises ``ValueError`` on an empty list (the rate is undefined).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("compliance_rate needs at least one text")
    return sum(parse_structured(t, variant)["complete"] for t in texts) / len(texts)


def strict_format(text: str, variant: str = "three") -> bool:
    """The upstream GRPO format check: ``text`` is exactly the variant's blocks in order (``<think>...</think>``,
    [``<semantic_elements>...</semantic_elements>``,] ``<answer>...</answer>``) with only whitespace between
    them and nothing before or after; tags lower-case as written."""
    body = r"\s*".join(rf"<{name}>.*?</{name}>" for name in _required(variant))
    return re.fullmatch(body, text, re.DOTALL) is not None


# ------------------------------------------------------------------------------------ semantic elements

# Heading label -> key. Checked in order on the label with any parenthetical removed. The AudSem data
# uses nine numbered categories (1 beings, 2 objects, 3 actions, 4 temporal, 5 spatial, 6 surfaces,
# 7 signal-level, 8 auditory sensation, 9 subjective); short "who/what/how/when/where" labels also work.
_SEMANTIC_RULES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (key, re.compile(pattern, re.IGNORECASE))
    for key, pattern in (
        ("who", r"^(who|agents?|sound[- ]generating (animated )?beings?.*|animated beings?.*|sound[- ]generating agents?.*)$"),
        ("what", r"^(what|sources?|sound sources?.*|physical (objects?|sources?|sound sources?).*)$"),
        ("how", r"^(how|mechanisms?|actions?(/| and | or )?(mechanisms?)?.*|generation mechanisms?.*)$"),
        ("when", r"^(when|temporal.*|time)$"),
        ("where", r"^(where|spatial.*|location|environment|setting)$"),
        ("materials", r"^(acoustic surfaces?.*|surfaces?.*|materials?.*)$"),
        ("signal", r"^signal[- ]level.*$"),
        ("sensation", r"^auditory sensation.*$"),
        ("subjective", r"^(subjective.*|emotional.*)$"),
    )
)
_HEADING_RE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\d{1,2}\s*[.)]\s*)?(?:\*\*|__)?\s*(?P<label>[A-Za-z][A-Za-z /&-]{0,80}?(?:\([^)]*\))?)"
    r"\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?(?P<rest>.*)$"
)


def _heading_key(line: str) -> tuple[str, str] | None:
    m = _HEADING_RE.match(line)
    if not m:
        return None
    label = re.sub(r"\([^)]*\)", "", m.group("label")).strip().rstrip(":").strip()
    if len(label.split()) > 8:
        return None
    for key, rule in _SEMANTIC_RULES:
        if rule.match(label):
            return key, m.group("rest").strip()
    return None


def parse_semantic_elements(text: str) -> dict[str, str]:
    """Split a ``<semantic_elements>`` body into descriptors keyed by role.

    A heading is a line such as ``who: a man``, ``- What: door``, ``**How**:`` or one of the AudSem category
    headings (``1. Sound-generating animated beings with descriptive adjectives:``). Keys: ``who``, ``what``,
    ``how``, ``when``, ``where`` and, for the longer AudSem lists, ``materials``, ``signal``, ``sensation``,
    ``subjective``. The value is the rest of the heading line plus the following lines up to the next
    heading, stripped; a key repeated later is appended on a new line. Unrecognised text before the first
    heading is ignored; a body with no heading gives ``{}``.
    """
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in (text or "").splitlines():
        head = _heading_key(line)
        if head is not None:
            current, rest = head
            out.setdefault(current, [])
            if rest:
                out[current].append(rest)
        elif current is not None and line.strip():
            out[current].append(line.strip())
    return {k: "\n".join(v).strip() for k, v in out.items()}
