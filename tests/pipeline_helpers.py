"""Shared by the pipeline tests: a local OpenAI-compatible chat server (127.0.0.1) and config writers.

The server answers fusion prompts (they contain "Cues:") with a caption naming the cue kinds, and
QA prompts with a JSON array. Markers in the prompt steer failures: ``FAIL500`` -> HTTP 500,
``SLOW`` -> sleeps past the client timeout, ``MALFORMED<n>`` -> the first n replies to that prompt
are not JSON, ``MALFORMED_ALWAYS`` -> never JSON.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from fake_http import JsonServer, chat_reply

REPO = Path(__file__).resolve().parents[1]


class FakeChatServer:
    def __init__(self, slow_s: float = 3.0):
        self.slow_s = slow_s
        self.attempts: dict[str, int] = {}
        self.requests = 0
        self.lock = threading.Lock()
        self.http = None

    @property
    def base_url(self) -> str:
        return self.http.url

    def _respond(self, path, headers, body):
        status, text = self.reply(body["messages"][-1]["content"])
        return (200, chat_reply(text)) if status == 200 else (status, {"error": "injected failure"})

    def reply(self, prompt: str) -> tuple[int, str]:
        with self.lock:
            self.requests += 1
            n = self.attempts[prompt] = self.attempts.get(prompt, 0) + 1
        if "FAIL500" in prompt:
            return 500, ""
        if "SLOW" in prompt:
            time.sleep(self.slow_s)
        m = re.search(r"MALFORMED(\d+)", prompt)
        if "MALFORMED_ALWAYS" in prompt or (m and n <= int(m.group(1))):
            return 200, "Sure! Here are some questions about the audio (no JSON, sorry)."
        if "Cues:" in prompt:
            kinds = re.findall(r"^- ([^:]+):", prompt, flags=re.MULTILINE)
            return 200, f"Caption: a clip described from {len(kinds)} cues ({'; '.join(kinds)})."
        caption = prompt.split("\n\n")[1].strip() if "\n\n" in prompt else prompt
        pairs = [{"question": "What cues describe the clip?", "answer": caption},
                 {"question": "Is this a test clip?", "answer": "Yes."}]
        return 200, "Here you go:\n```json\n" + json.dumps(pairs) + "\n```"

    def __enter__(self):
        self.http = JsonServer(self._respond)
        return self

    def __exit__(self, *exc):
        self.http.close()


def fast_stages(base_url: str | None, separation: bool = True) -> dict:
    """Stage sections for quick tests: tiny models, few tokens, the LLM stages on ``base_url``."""
    llm = ({"backend": "openai", "base_url": base_url, "model": "fake-instruct", "timeout_s": 2.0, "max_retries": 0}
           if base_url else {"backend": "local", "model": "tiny", "max_tokens": 8})
    return {
        "prepare": {"num_frames": 2},
        "separation": {"enabled": separation, "model": "tiny"},
        "asr": {"model": "tiny", "max_new_tokens": 4},
        "tagging": {"model": "tiny", "top_k": 3, "min_score": 0.0},
        "audio_caption": {"max_new_tokens": 6},
        "music_caption": {"max_new_tokens": 6, "min_tag_score": 0.0, "music_tags": ["Music", "Speech"]},
        "visual_caption": {"model": "tiny", "max_new_tokens": 4},
        "fusion": dict(llm),
        "clap_filter": {"model": "tiny", "threshold": -0.25},
        "qa": {**llm, "num_pairs": 2, "parse_retries": 1},
    }


def write_config(path: Path, clips_csv: Path, output_dir: Path, tiny_dir: Path, stages: dict, **top) -> Path:
    cfg = {"input": str(clips_csv), "output_dir": str(output_dir), "tiny_models_dir": str(tiny_dir),
           "dataset": "test", "torch_threads": 1, "stages": stages, **top}
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def snapshot_results(output_dir: Path) -> dict[str, str]:
    """{stage/clip.json: content} of every finished result."""
    root = Path(output_dir) / "work" / "results"
    return {str(p.relative_to(root)): p.read_text() for p in root.glob("*/*.json")} if root.is_dir() else {}


def run_cli(cfg_path, *extra) -> subprocess.Popen:
    """``python -m fusionaudio.pipeline --config cfg_path`` in its own process group."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "fusionaudio.pipeline", "--config", str(cfg_path), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc, output_dir: Path, min_results: int, timeout: float = 300) -> dict:
    """SIGKILL the run's process group once ``min_results`` results exist; returns the results then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run finished before it could be killed:\n{proc.stdout.read().decode()[-2000:]}")
        if len(snapshot_results(output_dir)) >= min_results:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return snapshot_results(output_dir)
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("no results before the timeout")
