"""AudSemThinker weight names as data: transformers-4.x (the released checkpoint and older adapters) <-> 5.x.

Adapters saved with transformers 4.x name the thinker's modules ``model.layers.*`` / ``audio_tower.*`` /
``visual.*``; transformers 5.x nests them as ``model.language_model.*`` / ``model.audio_tower.*`` /
``model.visual.*``. The released checkpoint prefixes everything with ``thinker.``.
"""

from __future__ import annotations

import re


#: transformers-4.x thinker key names -> 5.x (after peft's ``base_model.model.`` prefix).
THINKER_4X_TO_5X: list[tuple[str, str]] = [
    (r"^thinker\.", ""),  # adapters trained on the full Omni model
    (r"^model\.(?!(language_model|visual|audio_tower)\.)", "model.language_model."),
    (r"^(audio_tower|visual)\.", r"model.\1."),
]
_RULES = [(re.compile(p), r) for p, r in THINKER_4X_TO_5X]
_PREFIX = "base_model.model."


def to_current_name(name: str) -> str:
    """A peft adapter key in transformers-4.x naming mapped to 5.x (5.x names are unchanged)."""
    if not name.startswith(_PREFIX):
        return name
    rest = name[len(_PREFIX):]
    for pattern, repl in _RULES:
        rest = pattern.sub(repl, rest, count=1)
    return _PREFIX + rest


#: transformers-5.x thinker names -> the released checkpoint's names (inverse of THINKER_4X_TO_5X).
CURRENT_TO_RELEASED: list[tuple[str, str]] = [
    (r"^model\.language_model\.", "thinker.model."),
    (r"^model\.(audio_tower|visual)\.", r"thinker.\1."),
    (r"^lm_head\.", "thinker.lm_head."),
]
_RELEASED_RULES = [(re.compile(p), r) for p, r in CURRENT_TO_RELEASED]


def released_name(current: str) -> str:
    for pattern, repl in _RELEASED_RULES:
        if pattern.search(current):
            return pattern.sub(repl, current, count=1)
    raise KeyError(f"no released name for {current!r}")
