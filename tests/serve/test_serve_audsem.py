"""The API over the AudSemThinker family (a tiny random Qwen2.5-Omni thinker), in process."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fusionaudio.audsem import AudSemThinkerInference  # noqa: E402
from fusionaudio.audsem.tiny import build_tiny_checkpoint  # noqa: E402
from fusionaudio.serve.api import ServeConfig, create_app  # noqa: E402
from fusionaudio.serve.backend import make_backend  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "data" / "example" / "demo_clip.wav"
MODEL = "tiny-audsem"


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return AudSemThinkerInference(build_tiny_checkpoint(tmp_path_factory.mktemp("audsem") / "thinker", seed=0))


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(make_backend(engine), ServeConfig(model_id=MODEL))) as c:
        yield c


def body(question="Describe the audio.", audio=True, **kw):
    parts = [{"type": "text", "text": question}]
    if audio:
        parts.append({"type": "input_audio", "input_audio": {"data": base64.b64encode(CLIP.read_bytes()).decode(),
                                                             "format": "wav"}})
    return {"model": MODEL, "messages": [{"role": "user", "content": parts}], "temperature": 0, "max_tokens": 12, **kw}


def test_audsem_answer_usage_and_audio_info(client, engine):
    r = client.post("/v1/chat/completions", json=body())
    assert r.status_code == 200, r.text
    out = r.json()
    ext = out["choices"][0]["message"]["fusionaudio"]
    assert ext["arch"] == "audsemthinker" and set(ext["structured"]) == {"think", "semantic_elements", "answer",
                                                                         "complete"}
    assert ext["audio"]["truncated"] is True  # the tiny extractor hears 4 s of the 5.3 s clip
    expected = engine.predict(str(CLIP), "Describe the audio.", do_sample=False, max_new_tokens=12)
    assert ext["raw"] == expected
    text_only = client.post("/v1/chat/completions", json=body(audio=False)).json()
    assert out["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]  # the audio tokens
    assert 0 < out["usage"]["completion_tokens"] <= 12


def test_audsem_sections_fill_the_fusionaudio_field(client, engine, monkeypatch):
    raw = "<think>a tone</think><semantic_elements>sound: tone</semantic_elements><answer>A tone.</answer>"
    monkeypatch.setattr(engine, "generate", lambda prompts, waves, **kw: [raw] * len(prompts))
    r = client.post("/v1/chat/completions", json=body())
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] == "A tone."
    assert msg["fusionaudio"]["structured"] == {"think": "a tone", "semantic_elements": "sound: tone",
                                                "answer": "A tone.", "complete": True}
    stream = client.post("/v1/chat/completions", json=body(stream=True))
    assert '"content": "A tone."' in stream.text and stream.text.rstrip().endswith("data: [DONE]")


def test_audsem_errors_are_openai_style(client):
    bad = body()
    bad["messages"][0]["content"][1]["input_audio"]["data"] = "%%%"
    r = client.post("/v1/chat/completions", json=bad)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_base64"
    r = client.post("/v1/chat/completions", json=body(model="other"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
