"""The AudSemThinker GRPO rewards, with TRL's reward-function signature.

Each function takes ``completions`` -- TRL's conversational completions (``[{"role": "assistant",
"content": text}]`` per completion) or plain strings -- plus the dataset's other columns as keyword
arguments, and returns one float per completion. Numerically they are the upstream functions of
``training/grpo_main_omni.py`` (GLJS/AudSemThinker, commit c1e125b):

* :func:`accuracy` (upstream ``exact_accuracy_reward``): 1.0 when math_verify's
  ``verify(parse(completion), parse(answer))`` is positive (the whole completion is parsed; any math_verify
  error counts as "no"), else 1.0 when the ``<answer>`` text equals ``answer`` exactly, else 0.0. The
  ``<answer>`` text is the first ``<answer>...</answer>`` on one line (the pattern has no DOTALL), stripped;
  without one, the whole completion stripped.
* :func:`strict_format` (upstream ``strict_format_reward_func``): 0.5 when the completion is exactly the
  ``<think>``[/``<semantic_elements>``]/``<answer>`` blocks separated by whitespace
  (:func:`fusionaudio.structured.strict_format`), else 0.0.
* :func:`length` (upstream ``max_length_constraint_reward``, a pure length reward: its correctness factor
  is 1.0): ``n_y`` = words of the first one-line ``<think>`` text (the whole completion without one),
  ``clip(alpha * (target_length - n_y) + delta, 0, 1)``; with ``encourage_target_length`` and
  ``n_y <= target_length``, ``clip(1 - alpha * (target_length - n_y) + delta, 0, 1)``.
"""

from __future__ import annotations

import re

from fusionaudio.structured import strict_format as _strict_format

__all__ = ["accuracy", "strict_format", "length", "completion_texts"]

_ANSWER = re.compile(r"<answer>(.*?)</answer>")  # no DOTALL, as upstream
_THINK = re.compile(r"<think>(.*?)</think>")
_SECTIONS = {2: "two", 3: "three"}


def completion_texts(completions) -> list[str]:
    """The text of each completion: a string as is, a conversational completion's first message content."""
    texts = []
    for i, c in enumerate(completions):
        if isinstance(c, str):
            texts.append(c)
        elif isinstance(c, (list, tuple)) and c and isinstance(c[0], dict) and isinstance(c[0].get("content"), str):
            texts.append(c[0]["content"])
        else:
            raise TypeError(f"completion {i}: expected a string or [{{'content': str}}], got {type(c).__name__}")
    return texts


def _first(pattern: re.Pattern, text: str) -> str:
    m = pattern.search(text)
    return m.group(1).strip() if m else text.strip()


def _math_equal(text: str, answer: str) -> bool:
    from math_verify import parse, verify

    try:
        return float(verify(parse(text), parse(answer))) > 0
    except Exception:  # noqa: BLE001 - upstream treats any math_verify failure as "not equal"
        return False


def accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 per completion whose answer matches ``answer`` (math_verify, then the exact ``<answer>`` text)."""
    texts = completion_texts(completions)
    answers = [answer] * len(texts) if isinstance(answer, str) else list(answer)
    if len(answers) != len(texts):
        raise ValueError(f"got {len(texts)} completions but {len(answers)} answers")
    return [1.0 if _math_equal(t, a) or _first(_ANSWER, t) == a else 0.0 for t, a in zip(texts, answers)]


def strict_format(completions, sections: int = 2, **kwargs) -> list[float]:
    """0.5 per completion that is exactly the ``sections`` (2: think/answer, 3: with semantic_elements) blocks."""
    if sections not in _SECTIONS:
        raise ValueError(f"sections must be 2 or 3, got {sections!r}")
    return [0.5 if _strict_format(t, _SECTIONS[sections]) else 0.0 for t in completion_texts(completions)]


def length(completions, target_length: int = 100, alpha: float = 0.1, delta: float = 0.5,
           encourage_target_length: bool = False, **kwargs) -> list[float]:
    """Length reward on the words of the ``<think>`` text, in [0, 1] (see the module docstring)."""
    rewards = []
    for text in completion_texts(completions):
        n_y = len(_first(_THINK, text).split())
        gap = alpha * (target_length - n_y)
        value = 1.0 - gap + delta if encourage_target_length and n_y <= target_length else gap + delta
        rewards.append(max(0.0, min(1.0, value)))
    return rewards
