"""``fusion``: an LLM merges the cues of one clip into one fine-grained caption.

The prompt is a template file (``template``; the bundled ``prompts/fusion.txt`` by default) in
which ``{cues}`` is replaced by one line per available cue. Clips with no cue at all are skipped.
"""

from __future__ import annotations

import re

from fusionaudio.pipeline.stages.llm import LLM_DEFAULTS, LLM_PATH_KEYS, llm_path_keys, make_llm, read_template
from fusionaudio.pipeline.stages.base import Item, Stage, StageError

CUE_LABELS = {
    "asr": "Speech transcript (ASR)",
    "tagging": "Sound events (tagger, with scores)",
    "audio_caption": "General audio caption",
    "music_caption": "Music caption",
    "visual_caption": "Visual caption (video frames)",
}


def cue_lines(item: Item) -> dict[str, str]:
    """{stage: text} of the cues that succeeded and are not empty."""
    cues = {}
    for stage in CUE_LABELS:
        out = item.ok(stage)
        if not out:
            continue
        if stage == "tagging":
            text = ", ".join(f"{t['label']} ({t['score']:.2f})" for t in out["labels"])
        elif stage == "asr":
            text = out["text"]
        else:
            text = out["caption"]
        if text and text.strip():
            cues[stage] = text.strip()
    return cues


def clean_caption(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^(caption\s*:\s*)", "", text, flags=re.IGNORECASE).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class FusionStage(Stage):
    name = "fusion"
    reads = ("prepare", *CUE_LABELS)
    requires = ("prepare",)
    PATH_KEYS = (*LLM_PATH_KEYS, "template")

    @classmethod
    def path_keys(cls, section: dict) -> tuple[str, ...]:
        return llm_path_keys(section, ("template",))
    DEFAULTS = {**LLM_DEFAULTS, "template": None}

    def settings(self) -> dict:
        s = super().settings()
        s["template"] = read_template(self.cfg["template"], "fusion.txt")[1]
        return s

    def model_name(self) -> str:
        return f"{self.cfg['backend']}:{self.cfg['model']}"

    def skip_reason(self, item: Item) -> str | None:
        return None if cue_lines(item) else "no cues (every cue stage failed or was skipped)"

    def load(self) -> None:
        self.template = read_template(self.cfg["template"], "fusion.txt")[0]
        if "{cues}" not in self.template:
            raise ValueError(f"fusion template {self.cfg['template']}: it must contain {{cues}}")
        self.llm = make_llm(self.cfg, self.context)

    def unload(self) -> None:
        self.llm = None

    def prompt(self, item: Item) -> str:
        lines = "\n".join(f"- {CUE_LABELS[s]}: {t}" for s, t in cue_lines(item).items())
        return self.template.replace("{cues}", lines)

    def process(self, items: list[Item]) -> list:
        replies = self.llm.complete([self.prompt(it) for it in items])
        outs = []
        for item, reply in zip(items, replies):
            if isinstance(reply, BaseException):
                outs.append(reply)
                continue
            caption = clean_caption(reply)
            outs.append({"caption": caption, "cues": sorted(cue_lines(item))} if caption
                        else StageError("fusion: the LLM returned an empty caption"))
        return outs
