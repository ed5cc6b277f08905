"""Requests and clients that misbehave, against the API (in process, a stand-in backend without a model).

* bodies that are valid JSON but no valid request -- nested 100,000 deep, a seed torch cannot take, a lone
  UTF-16 surrogate -- are a 400 naming the problem (and the field), logged in one line, no traceback;
* a failure that is really the server's stays a 500 that says so;
* connections: a client that sends nothing, drips its headers or its body is answered 408 and closed after
  ``request_timeout``; one client address holds at most ``max_connections_per_client`` connections (429);
  a request that arrived whole is never timed, however long its answer takes.

The dropped-stream case (a client that hangs up mid-answer stops its row) runs the demo model:
``test_serve_batcher.py`` (the watcher) and ``test_a_dropped_stream_stops_its_generation`` here.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fuzz_corpus import nested_json  # noqa: E402
from fusionaudio.serve.api import ServeConfig, create_app  # noqa: E402
from fusionaudio.serve.backend import Job, Result  # noqa: E402
from fusionaudio.serve.process import free_port  # noqa: E402

MODEL = "echo"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EchoBackend:
    """Answers the question reversed; ``explode`` fails in generation, ``slow`` takes ``slow_s`` seconds."""

    arch = "gama"
    num_audio_tokens = 0
    context_length = 4096

    def __init__(self, slow_s: float = 0.0):
        self.slow_s = slow_s

    def prepare(self, question: str, audio) -> Job:
        return Job(question, None, prompt_tokens=len(question.split()))

    def batch_key(self, job: Job):
        return None

    def run(self, jobs: list[Job]) -> list[Result]:
        if any(j.question == "explode" for j in jobs):
            raise RuntimeError("CUDA out of memory (simulated)")
        if any(j.question == "slow" for j in jobs):
            time.sleep(self.slow_s)
        return [Result(j.question[::-1], j.question[::-1], 1, "stop") for j in jobs]


def body(question="Describe the audio.", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}], **extra}


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(EchoBackend(), ServeConfig(model_id=MODEL))) as c:
        yield c


def post(client, content: bytes | str):
    return client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})


def test_a_valid_request_still_gets_its_answer(client):
    r = client.post("/v1/chat/completions", json=body("abc", seed=2**64 - 1))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "cba"


# (raw body, param, words the message must hold)
MALFORMED = {
    "nested 100,000 deep": (nested_json(100_000), None, "nested deeper than 32"),
    "nested 40 deep": (nested_json(40), None, "nested deeper than 32"),
    "a million values": (json.dumps(body(stop=[0] * 1_000_000)), None, "more than 100,000 JSON values"),
    "seed over 2**64-1": (json.dumps(body(seed=2**64)), "seed", "less than or equal to 18446744073709551615"),
    "seed under -2**63": (json.dumps(body(seed=-(2**63) - 1)), "seed", "greater than or equal to"),
    "lone surrogate in the question": (json.dumps(body("what is \ud800 this?")), "messages[0].content[0].text",
                                       "unpaired UTF-16 surrogate"),
    "lone surrogate in a stop string": (json.dumps(body(stop=["\udfff"])), "stop[0]", "unpaired UTF-16 surrogate"),
    "lone surrogate in a key": ('{"model": "echo", "messages": [], "\\ud800": 1}', None, "unpaired UTF-16 surrogate"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bodies_are_a_400_naming_the_problem_in_one_log_line(client, caplog, case):
    raw, param, needle = MALFORMED[case]
    with caplog.at_level(logging.INFO, logger="fusionaudio.serve"):
        r = post(client, raw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"], err
    records = [rec for rec in caplog.records if rec.name == "fusionaudio.serve"]
    assert len(records) == 1 and records[0].exc_info is None and "400" in records[0].getMessage(), records
    assert client.get("/health").json()["status"] == "ok"


def test_a_generation_failure_is_the_servers_500_and_says_so(client):
    r = client.post("/v1/chat/completions", json=body("explode"))
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["type"] == "server_error" and err["message"].startswith("generation failed: RuntimeError: CUDA out")
    assert client.post("/v1/chat/completions", json=body("fine")).status_code == 200


def test_serve_flags_for_slow_and_greedy_clients():
    from fusionaudio.serve.cli import serve_parser

    text = serve_parser().format_help()
    assert "--request_timeout" in text and "408" in text and "--max_connections_per_client" in text
    args = serve_parser().parse_args(["--request_timeout", "5", "--max_connections_per_client", "3"])
    assert (args.request_timeout, args.max_connections_per_client) == (5.0, 3)


# ------------------------------------------------------------------------------ connections
@contextmanager
def running(app, timeout: float, per_client: int):
    import uvicorn

    from fusionaudio.serve.connections import ClientLimits, server_config

    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, ClientLimits(timeout, per_client)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


def read_until_closed(sock: socket.socket, limit_s: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection (``limit_s``: a test that hangs fails)."""
    sock.settimeout(limit_s)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.fixture(scope="module")
def strict_server():
    with running(create_app(EchoBackend(slow_s=2.0), ServeConfig(model_id=MODEL)), timeout=0.5, per_client=50) as port:
        yield port


def test_a_client_that_sends_nothing_is_answered_408_and_closed(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server)) as s:
        reply = read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply


def test_a_client_that_drips_its_headers_is_closed(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(100):  # one more header line every 0.1 s: never a whole request
            try:
                s.sendall(f"X-Drip-{i}: {i}\r\n".encode())
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        reply = b"" if closed else read_until_closed(s, 5.0)
    assert closed or reply.startswith(b"HTTP/1.1 408"), reply


def test_a_client_that_drips_its_body_is_closed(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{\"model\": ")
        reply = read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_a_whole_request_is_never_timed_and_idle_keep_alive_is_closed(strict_server):
    url = f"http://127.0.0.1:{strict_server}/v1/chat/completions"
    r = httpx.post(url, json=body("slow"), timeout=60)  # answered after 2 s, four times the request timeout
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "wols"
    with socket.create_connection(("127.0.0.1", strict_server)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(s)  # the answer, then the idle connection is closed
    assert reply.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in reply


def test_one_client_holds_at_most_its_connections():
    with running(create_app(EchoBackend(), ServeConfig(model_id=MODEL)), timeout=60.0, per_client=3) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", port)) as extra:
                reply = read_until_closed(extra)
            assert reply.startswith(b"HTTP/1.1 429") and b"too_many_connections" in reply
            held.pop().close()
            for _ in range(100):  # the server counts the closed connection out, then admits a new one
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 200:
                    break
                time.sleep(0.05)
            assert r is not None and r.status_code == 200
        finally:
            for s in held:
                s.close()


# ------------------------------------------------------------------------------ dropped streams
def test_a_dropped_stream_stops_its_generation(monkeypatch):
    from fusionaudio.inference import create_inference
    from fusionaudio.serve import backend as backend_module

    slow_step = backend_module.BatchWatcher.__call__

    def step(self, input_ids, scores=None, **kw):  # 50 ms a token: the client hangs up long before the end
        time.sleep(0.05)
        return slow_step(self, input_ids, scores, **kw)

    monkeypatch.setattr(backend_module.BatchWatcher, "__call__", step)
    results = []

    class Recording(backend_module.GamaBackend):
        def run(self, jobs):
            out = super().run(jobs)
            results.extend(out)
            return out

    app = create_app(Recording(create_inference("gama")), ServeConfig(model_id=MODEL))
    with running(app, timeout=30.0, per_client=8) as port:
        request = body("Describe the audio.", stream=True, temperature=0, max_tokens=200)
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=request, timeout=60) as r:
            for line in r.iter_lines():
                if '"content":' in line and '"content": ""' not in line and '"content":""' not in line:
                    break  # the first piece of the answer: hang up
        for _ in range(600):
            if results:
                break
            time.sleep(0.05)
    assert len(results) == 1 and results[0].finish_reason == "cancelled", results
    assert results[0].completion_tokens < 200
