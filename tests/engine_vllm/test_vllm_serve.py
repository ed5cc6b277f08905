"""``fusionaudio serve --engine vllm`` beyond the shared API tests (tests/serve/test_serve.py runs those
against this engine too): a client that hangs up has its generation aborted in vLLM.

A tiny random model (head_dim 32) whose greedy answers run to ``max_tokens``, so that a request is still
generating when its client goes away."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

pytest.importorskip("vllm", reason="the vLLM engine tests run in the vLLM venv: make test-vllm")

from fusionaudio.gama.config import GamaConfig  # noqa: E402
from fusionaudio.serve.process import ServerProcess  # noqa: E402

MODEL = "tiny-hd32"
LONG = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from fusionaudio.gama.tiny import make_reference_base_dir

    d = tmp_path_factory.mktemp("serve_hd32")
    base = make_reference_base_dir(d / MODEL, GamaConfig.from_name("tiny", llm={"num_attention_heads": 2,
                                                                                   "num_key_value_heads": 2}),
                                   seed=4, llm_init_std=0.2)
    os.environ.setdefault("FUSIONAUDIO_CACHE", str(d / "cache"))
    with ServerProcess("serve", ["--base_model", str(base), "--engine", "vllm", "--max_tokens", str(LONG),
                                 "--threads", "1"], timeout=600) as url:
        yield url


def chat(server, question: str, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": LONG, **extra}
    return httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120)


def stats(server) -> dict:
    return httpx.get(f"{server}/health").json()["batching"]


def test_hang_up_aborts_the_generation(server):
    full = chat(server, "Describe the audio.").json()
    assert full["choices"][0]["finish_reason"] == "length"  # runs to max_tokens: long enough to hang up in
    before = stats(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Describe the audio."}], "temperature": 0,
            "max_tokens": LONG, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # the first piece of the answer: hang up
    deadline = time.monotonic() + 30
    now = stats(server)
    while time.monotonic() < deadline and not (now["cancelled"] > before["cancelled"] and now["running"] == 0):
        time.sleep(0.2)
        now = stats(server)
    assert now["cancelled"] == before["cancelled"] + 1 and now["running"] == 0, now
    assert now["requests"] == before["requests"]  # it never finished
    again = chat(server, "Describe the audio.").json()  # the engine goes on serving
    assert again["choices"][0]["message"]["content"] == full["choices"][0]["message"]["content"]
