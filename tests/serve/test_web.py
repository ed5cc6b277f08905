"""``fusionaudio demo``: the request handler in process (the page in a real browser: test_web_browser.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "data" / "example" / "demo_clip.wav"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ handler, in process
@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    from fusionaudio.inference import create_inference
    from fusionaudio.serve.backend import make_backend
    from fusionaudio.serve.web import DemoApp

    log = tmp_path_factory.mktemp("demo") / "requests.jsonl"
    app = DemoApp(make_backend(create_inference("gama")), log_file=log)
    yield app
    app.batcher.stop()


def test_handler_answers_logs_and_reports_bad_audio(demo_app, tmp_path):
    ok = demo_app.answer(str(CLIP), "Describe the audio.", 0.0, 0.95, 40)
    assert ok["error"] == "" and ok["answer"].strip()
    assert ok["info"] == "5.30 s, 16000 Hz, 1 channel(s), not truncated"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\x00" * 64)
    err = demo_app.answer(str(bad), "Describe the audio.", 0.0, 0.95, 40)
    assert err["answer"] == "" and err["error"].startswith("Error: audio: cannot decode")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    assert "non-finite" in demo_app.answer(str(nan), "Describe.", 0.0, 0.95, 40)["error"]
    assert "question" in demo_app.answer(str(CLIP), "  ", 0.0, 0.95, 40)["error"]
    lines = [json.loads(x) for x in demo_app.log_file.read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0]["answer"] == ok["answer"] and lines[0]["question"] == "Describe the audio."
    assert lines[0]["audio_sha256"] == __import__("hashlib").sha256(CLIP.read_bytes()).hexdigest()
    assert lines[0]["settings"] == {"temperature": 0.0, "top_p": 0.95, "max_tokens": 40}
    assert "error" in lines[1] and "answer" not in lines[1]
