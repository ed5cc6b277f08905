"""``fusionaudio serve``: one real server (the bundled demo model) on a free 127.0.0.1 port, driven by
the ``openai`` client (sync and streaming) and by raw HTTP for malformed requests."""

from __future__ import annotations

import base64
import importlib.util
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from fusionaudio.serve.process import ServerProcess

openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "data" / "example" / "demo_clip.wav"
KEY = "test-key-123"
MODEL = "fusionaudio-demo"


#: every test runs against each engine this Python has (vLLM: in the venv of `make vllm-env`, `make test-vllm`)
ENGINES = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") is not None else [])


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    # one torch thread: the test process and the server share the CPU cores
    if engine == "vllm":  # where the Llama weights for vLLM are written
        os.environ.setdefault("FUSIONAUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
    with ServerProcess("serve", ["--api_key", KEY, "--threads", "1", "--max_batch_size", "8", "--max_wait_ms", "100",
                                 "--max_audio_seconds", "20", "--max_tokens", "256", "--max_body_mb", "1",
                                 "--engine", engine], timeout=600 if engine == "vllm" else 180) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wav_bytes(wave: np.ndarray, sr: int = 16000, fmt: str = "WAV", subtype: str | None = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, freq: float, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    return wav_bytes(0.3 * np.sin(2 * np.pi * freq * t), sr)


def user(question: str, audio: bytes | None = None, fmt: str = "wav") -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": question}]
    if audio is not None:
        parts.append({"type": "input_audio", "input_audio": {"data": b64(audio), "format": fmt}})
    return [{"role": "user", "content": parts}]


CLIP_BYTES = CLIP.read_bytes()


def test_models_health_and_api_key(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["arch"] == "gama"
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()


def test_chat_with_audio_and_usage(client):
    out = client.chat.completions.create(model=MODEL, messages=user("Describe the audio.", CLIP_BYTES),
                                         temperature=0, max_tokens=64)
    choice = out.choices[0]
    assert out.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content.strip() and choice.finish_reason in ("stop", "length")
    ext = choice.message.fusionaudio
    assert ext["audio"]["duration_s"] == pytest.approx(5.3) and ext["audio"]["truncated"] is False
    assert ext["audio_tokens"] == 96
    text_only = client.chat.completions.create(model=MODEL, messages=user("Describe the audio."), temperature=0,
                                               max_tokens=4)
    # the same prompt text, plus the 32 Q-Former + 64 aggregator audio tokens
    assert out.usage.prompt_tokens == text_only.usage.prompt_tokens + 96
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert 0 < out.usage.completion_tokens <= 64


def test_streaming_equals_plain_answer(client):
    kw = dict(model=MODEL, messages=user("What do you hear?", CLIP_BYTES), temperature=0, max_tokens=40)
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1, "the answer should arrive in several deltas"
    assert "".join(content) == plain.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_max_tokens_stop_and_seed(client):
    base = dict(model=MODEL, messages=user("Describe the audio.", CLIP_BYTES), temperature=0)
    full = client.chat.completions.create(**base, max_tokens=80).choices[0].message.content
    short = client.chat.completions.create(**base, max_completion_tokens=5)
    assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
    assert full.startswith(short.choices[0].message.content)
    cut = full.split()[3]
    stopped = client.chat.completions.create(**base, max_tokens=80, stop=[cut])
    assert stopped.choices[0].finish_reason == "stop"
    assert cut not in stopped.choices[0].message.content and full.startswith(stopped.choices[0].message.content)
    sample = dict(base, temperature=1.0, top_p=0.9, max_tokens=30, seed=7)
    a, b = (client.chat.completions.create(**sample).choices[0].message.content for _ in range(2))
    assert a == b


def test_concurrent_greedy_requests_are_batched_and_equal_alone(client, server):
    reqs = [("Describe the audio.", CLIP_BYTES, 48), ("What is the main sound?", CLIP_BYTES, 20),
            ("Describe the audio.", tone(2.0, 440.0), 48), ("Is there speech?", tone(1.0, 3000.0), 12),
            ("What do you hear?", tone(3.5, 800.0), 32), ("Describe the audio.", tone(0.5, 200.0), 40)]

    def ask(r):
        q, audio, n = r
        out = client.chat.completions.create(model=MODEL, messages=user(q, audio), temperature=0, max_tokens=n)
        return out.choices[0].message.content, out.usage.completion_tokens, out.choices[0].message.fusionaudio

    alone = [ask(r) for r in reqs]
    assert all(a[2]["batch_size"] == 1 for a in alone)
    with ThreadPoolExecutor(len(reqs)) as pool:
        together = list(pool.map(ask, reqs))
    assert max(t[2]["batch_size"] for t in together) > 1, "concurrent requests were not batched"
    assert [t[:2] for t in together] == [a[:2] for a in alone]
    assert httpx.get(f"{server}/health").json()["batching"]["largest_batch"] > 1


# ------------------------------------------------------------------------------ malformed requests
def raw_post(server, body, headers=None):
    headers = {"Authorization": f"Bearer {KEY}", **(headers or {})}
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{server}/v1/chat/completions", content=body, headers=headers, timeout=60)
    return httpx.post(f"{server}/v1/chat/completions", json=body, headers=headers, timeout=60)


def audio_body(data: str, fmt: str = "wav", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe the audio."},
        {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}]}], **extra}


NAN_WAV = wav_bytes(np.full(16000, np.nan))
BAD_CASES = {
    "bad base64": (audio_body("not*base64!"), 400, "invalid_base64", "base64"),
    "undecodable audio": (audio_body(b64(b"RIFF" + os.urandom(2000))), 400, "invalid_audio", "cannot decode"),
    "nan audio": (audio_body(b64(NAN_WAV)), 400, "invalid_audio", "non-finite"),
    "format mismatch": (audio_body(b64(wav_bytes(np.zeros(16000), fmt="FLAC", subtype=None))), 400,
                        "invalid_audio", "FLAC"),
    "audio too long": (audio_body(b64(wav_bytes(np.zeros(8000 * 25), 8000, subtype="PCM_16"))), 400,
                       "audio_too_long", "20 s"),
    "audio too short": (audio_body(b64(wav_bytes(np.zeros(100)))), 400, "invalid_audio", "too short"),
    "unknown model": ({"model": "gpt-4o", "messages": user("hi")}, 404, "model_not_found", "gpt-4o"),
    "wrong field type": ({"model": MODEL, "messages": user("hi"), "temperature": "hot"}, 400, "invalid_type",
                         "temperature"),
    "content wrong type": ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "invalid_type",
                           "content"),
    "unknown field": ({"model": MODEL, "messages": user("hi"), "temprature": 0}, 400, "invalid_type", "temprature"),
    "max_tokens over limit": ({"model": MODEL, "messages": user("hi"), "max_tokens": 5000}, 400, None, "256"),
    "over-long request": ({"model": MODEL, "messages": user("noise " * 3000)}, 400, "context_length_exceeded",
                          "context"),
    "two turns": ({"model": MODEL, "messages": [{"role": "system", "content": "x"}, *user("hi")]}, 400, None,
                  "system"),
    "not json": ("{not json", 400, "invalid_json", "JSON"),
    "nested 100,000 deep": (b'{"model": "x", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
                            "invalid_json", "nested deeper"),
    "seed over 64 bits": ({"model": MODEL, "messages": user("hi"), "seed": 2**64}, 400, "invalid_type", "seed"),
    "lone surrogate": ('{"model": "%s", "messages": [{"role": "user", "content": "why \\ud800?"}]}' % MODEL, 400,
                       "invalid_value", "surrogate"),
    "body too large": ("x" * (1024 * 1024 + 10), 413, "request_too_large", "limit"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_malformed_requests_get_openai_style_errors(server, case):
    body, status, code, needle = BAD_CASES[case]
    r = raw_post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code if code else True
    assert needle in err["message"], err["message"]


def test_openai_client_raises_on_bad_audio(client):
    with pytest.raises(openai.BadRequestError, match="non-finite"):
        client.chat.completions.create(model=MODEL, messages=user("Describe.", NAN_WAV))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=user("Describe."))


def test_bad_requests_do_not_disturb_good_ones(server, client):
    good = dict(model=MODEL, messages=user("Describe the audio.", CLIP_BYTES), temperature=0, max_tokens=24)
    expected = client.chat.completions.create(**good).choices[0].message.content

    def one(i):
        if i % 2:
            return raw_post(server, audio_body(b64(NAN_WAV if i % 4 == 1 else b"junk"))).status_code
        return client.chat.completions.create(**good).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(one, range(8)))
    assert out[0::2] == [expected] * 4
    assert out[1::2] == [400] * 4
    assert httpx.get(f"{server}/health").json()["status"] == "ok"

