"""Prompt templates (the reference's "alpaca_short")."""

from __future__ import annotations

TEMPLATES = {
    "alpaca_short": {
        "prompt_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "prompt_no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
        "response_split": "### Response:",
    },
}


def build_prompt(instruction: str, input: str | None = None, label: str | None = None,
                 template: str = "alpaca_short") -> str:
    """The prompt text for one request (with the answer appended when ``label`` is given)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; available: {sorted(TEMPLATES)}")
    t = TEMPLATES[template]
    text = t["prompt_input"].format(instruction=instruction, input=input) if input else \
        t["prompt_no_input"].format(instruction=instruction)
    return text + label if label else text
