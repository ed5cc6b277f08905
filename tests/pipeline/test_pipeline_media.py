"""The prepare stage (ffmpeg): audio extraction, windows, frames, and each kind of bad media."""

import pytest
import soundfile as sf

from fusionaudio.pipeline import synthetic
from fusionaudio.pipeline.inputs import read_clips
from fusionaudio.pipeline.stages.base import run_batch
from fusionaudio.pipeline.stages.prepare import PrepareStage
from fusionaudio.pipeline.store import ResultStore


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory):
    return synthetic.make_example_clips(tmp_path_factory.mktemp("clips"), with_bad=True)


def _prepare(clips, out, **cfg):
    stage = PrepareStage({**PrepareStage.DEFAULTS, "num_frames": 3, **cfg}, {})
    store = ResultStore(out)
    counts = run_batch(stage, clips, store)
    return {c.id: store.get("prepare", c.id) for c in clips}, counts


def test_prepare_good_and_bad_clips(clips_csv, tmp_path):
    clips = read_clips(clips_csv)
    res, counts = _prepare(clips, tmp_path)
    assert counts["ok"] == 4 and counts["error"] == 4
    speech = res["speech"]["output"]
    data, sr = sf.read(speech["audio"])
    assert sr == 16000 and data.ndim == 1 and abs(len(data) / sr - speech["duration"]) < 0.01
    assert speech["frames"] == [] and speech["has_video"] is False
    assert abs(res["melody_part"]["output"]["duration"] - 1.5) < 0.03  # start 0.5, end 2.0
    assert abs(res["melody"]["output"]["duration"] - 3.0) < 0.03
    video = res["scene_video"]["output"]
    assert video["has_video"] and len(video["frames"]) == 3 and all(f.endswith(".jpg") for f in video["frames"])
    errors = {cid: res[cid]["error"] for cid in ("silent", "mute_video", "corrupt", "missing")}
    assert all(res[cid]["status"] == "error" for cid in errors)
    assert "silent clip" in errors["silent"] and "silent.wav" in errors["silent"]
    assert errors["mute_video"].endswith("mute_video.mp4: no audio track")
    assert "corrupt.wav" in errors["corrupt"] and "cannot be decoded" in errors["corrupt"]
    assert errors["missing"].endswith("no_such_file.wav: file not found")
    # a second run computes nothing
    again, counts = _prepare(clips, tmp_path)
    assert counts["done_before"] == 8 and again == res


def test_window_past_the_end_and_downloader_off(clips_csv, tmp_path):
    (tmp_path / "c.csv").write_text(f"id,path,start,end,youtube_id\nlate,{clips_csv.parent / 'melody.wav'},10,12,\n"
                                    "yt,,,,dQw4w9WgXcQ\n")
    res, _ = _prepare(read_clips(tmp_path / "c.csv"), tmp_path / "out")
    assert "min_duration" in res["late"]["error"]
    assert "downloader is off" in res["yt"]["error"]
