"""``qa``: the same kind of LLM client writes question-answer pairs from the kept caption.

The reply must hold a JSON array of ``{"question", "answer"}`` objects (surrounding prose and code
fences are tolerated). A malformed reply is asked for again, up to ``parse_retries`` more times;
then the clip's error records the reason and the start of the last reply.
"""

from __future__ import annotations

import json

from fusionaudio.pipeline.stages.llm import LLM_DEFAULTS, LLM_PATH_KEYS, llm_path_keys, make_llm, read_template
from fusionaudio.pipeline.stages.base import Item, Stage, StageError


class MalformedQA(ValueError):
    pass


def parse_qa(text: str, max_pairs: int) -> list[dict]:
    """The QA pairs of an LLM reply, or :class:`MalformedQA` saying what is wrong."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        raise MalformedQA("no JSON array in the reply")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise MalformedQA(f"the JSON array does not parse ({e})") from None
    if not isinstance(data, list) or not data:
        raise MalformedQA("the JSON array is empty")
    pairs = []
    for k, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise MalformedQA(f"item {k} is not an object")
        q, a = entry.get("question"), entry.get("answer")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
            raise MalformedQA(f"item {k} lacks a non-empty string 'question' and 'answer'")
        pairs.append({"question": q.strip(), "answer": a.strip()})
    return pairs[:max_pairs]


class QAStage(Stage):
    name = "qa"
    reads = ("prepare", "fusion", "clap_filter")
    requires = ("prepare", "fusion", "clap_filter")
    PATH_KEYS = (*LLM_PATH_KEYS, "template")

    @classmethod
    def path_keys(cls, section: dict) -> tuple[str, ...]:
        return llm_path_keys(section, ("template",))
    DEFAULTS = {**LLM_DEFAULTS, "template": None, "num_pairs": 3, "parse_retries": 2}

    def settings(self) -> dict:
        s = super().settings()
        s["template"] = read_template(self.cfg["template"], "qa.txt")[1]
        return s

    def model_name(self) -> str:
        return f"{self.cfg['backend']}:{self.cfg['model']}"

    def load(self) -> None:
        self.template = read_template(self.cfg["template"], "qa.txt")[0]
        if "{caption}" not in self.template:
            raise ValueError(f"qa template {self.cfg['template']}: it must contain {{caption}}")
        self.llm = make_llm(self.cfg, self.context)

    def unload(self) -> None:
        self.llm = None

    def prompt(self, item: Item) -> str:
        return self.template.replace("{caption}", item.ok("fusion")["caption"]).replace(
            "{num_pairs}", str(self.cfg["num_pairs"]))

    def process(self, items: list[Item]) -> list:
        attempts = 1 + int(self.cfg["parse_retries"])
        prompts = {i: self.prompt(it) for i, it in enumerate(items)}
        outs: list = [None] * len(items)
        last: dict[int, str] = {}
        for attempt in range(1, attempts + 1):
            todo = [i for i in range(len(items)) if outs[i] is None]
            if not todo:
                break
            for i, reply in zip(todo, self.llm.complete([prompts[i] for i in todo])):
                if isinstance(reply, BaseException):
                    outs[i] = reply  # transport errors are not retried here (the client already retried)
                    continue
                try:
                    outs[i] = {"pairs": parse_qa(reply, self.cfg["num_pairs"]), "attempts": attempt}
                except MalformedQA as e:
                    last[i] = f"{e}; last reply starts {reply[:160]!r}"
        return [o if o is not None else StageError(f"qa: malformed LLM output after {attempts} attempt(s): {last[i]}")
                for i, o in enumerate(outs)]
