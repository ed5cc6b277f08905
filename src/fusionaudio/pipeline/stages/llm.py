"""The LLM behind ``fusion`` and ``qa``: an OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp,
any hosted API) or a local transformers causal LM.

``complete(prompts)`` returns one reply string or one exception per prompt, so an endpoint
error or timeout becomes that clip's error and the other clips continue.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fusionaudio.pipeline.stages.base import StageError
from fusionaudio.pipeline.stages.common import model_dir, torch_dtype

LLM_DEFAULTS = {"backend": "local", "model": "tiny", "base_url": None, "api_key_env": "OPENAI_API_KEY",
                "timeout_s": 120.0, "max_retries": 2, "max_workers": 8, "temperature": 0.0, "max_tokens": 256,
                "system": None, "dtype": "float32"}
LLM_PATH_KEYS = ("model",)


def llm_path_keys(section: dict, extra: tuple[str, ...]) -> tuple[str, ...]:
    """``model`` is a local directory for the local backend, a served model name for ``openai``."""
    return (LLM_PATH_KEYS if section.get("backend") == "local" else ()) + extra


class OpenAIChatLLM:
    """Chat completions from ``{base_url}/chat/completions`` (the key from ``api_key_env``, if set)."""

    def __init__(self, cfg: dict):
        from fusionaudio.evaluate.judge import JudgeUnavailable, OpenAICompatClient

        if not cfg["base_url"]:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.client = OpenAICompatClient(cfg["base_url"], cfg["model"], api_key_env=cfg["api_key_env"],
                                         use_cache=False, max_workers=cfg["max_workers"],
                                         max_retries=cfg["max_retries"], timeout=cfg["timeout_s"], backoff_base=0.2,
                                         backoff_max=5.0)
        self.name = f"openai:{cfg['base_url']}:{cfg['model']}"
        self.unavailable = JudgeUnavailable

    def _one(self, prompt: str):
        messages = ([{"role": "system", "content": self.cfg["system"]}] if self.cfg["system"] else []) + \
            [{"role": "user", "content": prompt}]
        try:
            return self.client.chat(messages, temperature=self.cfg["temperature"], max_tokens=self.cfg["max_tokens"])
        except Exception as e:  # noqa: BLE001 -- JudgeError, bad replies: all become the clip's error
            return StageError(f"LLM endpoint {self.cfg['base_url']}: {e}", environment=isinstance(e, self.unavailable))

    def complete(self, prompts: list[str]) -> list:
        with ThreadPoolExecutor(max_workers=max(1, min(self.cfg["max_workers"], len(prompts)))) as pool:
            return list(pool.map(self._one, prompts))


class LocalCausalLM:
    """A local ``AutoModelForCausalLM`` (chat template when the tokenizer has one), batched, left-padded."""

    def __init__(self, cfg: dict, context: dict):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = model_dir(cfg["model"], "llm", context)
        self.cfg = cfg
        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
        self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                                          dtype=torch_dtype(cfg["dtype"])).to(cfg["device"]).eval()
        self.name = f"local:{path}"

    def _text(self, prompt: str) -> str:
        if getattr(self.tok, "chat_template", None):
            msgs = ([{"role": "system", "content": self.cfg["system"]}] if self.cfg["system"] else []) + \
                [{"role": "user", "content": prompt}]
            return self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return prompt

    def complete(self, prompts: list[str]) -> list:
        import torch

        enc = self.tok([self._text(p) for p in prompts], return_tensors="pt", padding=True).to(self.cfg["device"])
        sample = self.cfg["temperature"] > 0
        gen = {"max_new_tokens": self.cfg["max_tokens"], "do_sample": sample, "pad_token_id": self.tok.pad_token_id}
        if sample:
            gen["temperature"] = self.cfg["temperature"]
        with torch.no_grad():
            ids = self.model.generate(**enc, **gen)
        return [t.strip() for t in self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def make_llm(cfg: dict, context: dict):
    if cfg["backend"] == "openai":
        return OpenAIChatLLM(cfg)
    if cfg["backend"] == "local":
        return LocalCausalLM(cfg, context)
    raise ValueError(f"LLM backend must be 'openai' or 'local', not {cfg['backend']!r}")


def read_template(value, default_name: str) -> tuple[str, str]:
    """(template text, where it came from): ``value`` is a file path, or None for the bundled one."""
    path = Path(value) if value else Path(__file__).resolve().parents[1] / "prompts" / default_name
    if not path.is_file():
        raise FileNotFoundError(f"prompt template not found: {path}")
    return path.read_text(), str(path)
