"""Each model stage with a tiny random model of its real class (built offline), on synthetic clips."""

import numpy as np
import pytest
import soundfile as sf

from fusionaudio.pipeline import synthetic
from fusionaudio.pipeline.config import COMMON_DEFAULTS
from fusionaudio.pipeline.inputs import read_clips
from fusionaudio.pipeline.stages import STAGE_CLASSES
from fusionaudio.pipeline.stages.base import Item, run_batch
from fusionaudio.pipeline.stages.common import audio_input
from fusionaudio.pipeline.store import ResultStore


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    clips = read_clips(synthetic.make_example_clips(tmp_path_factory.mktemp("clips")))
    store = ResultStore(tmp_path_factory.mktemp("out"))
    context = {"tiny_models_dir": tmp_path_factory.getbasetemp() / "pipeline_tiny", "enabled": None}
    run_batch(make("prepare", context), clips, store)
    return clips, store, context


def make(name, context, **cfg):
    cls = STAGE_CLASSES[name]
    return cls({**COMMON_DEFAULTS, **cls.DEFAULTS, **cfg}, context)


def results(store, stage, clips):
    return {c.id: store.get(stage, c.id) for c in clips}


def test_separation_writes_speech_and_background_stems(env):
    clips, store, context = env
    counts = run_batch(make("separation", context, model="tiny"), clips, store)
    assert counts["ok"] == len(clips)
    for clip in clips:
        out = store.get("separation", clip.id)["output"]
        mix, sr = sf.read(store.get("prepare", clip.id)["output"]["audio"])
        for key in ("speech", "background"):
            stem, sr2 = sf.read(out[key])
            assert sr2 == sr == 16000 and abs(len(stem) - len(mix)) <= 2
        item = Item(clip, {"prepare": store.get("prepare", clip.id), "separation": store.get("separation", clip.id)},
                    store.media_dir(clip.id))
        assert audio_input(item, "speech") == out["speech"] and audio_input(item, "mix").endswith("audio.wav")
    assert out["sources"] == ["drums", "bass", "other", "vocals"]


def test_asr_whisper_batched_equals_one_by_one(env, tmp_path):
    clips, store, context = env
    stage = make("asr", context, audio="mix", max_new_tokens=5)
    assert run_batch(stage, clips, store)["ok"] == len(clips)
    batched = {c.id: store.get("asr", c.id)["output"]["text"] for c in clips}
    single = ResultStore(tmp_path)
    for c in clips:
        single.put("prepare", c.id, "ok", output=store.get("prepare", c.id)["output"])
        run_batch(stage, [c], single)
        assert single.get("asr", c.id)["output"]["text"] == batched[c.id]
    assert all(isinstance(t, str) for t in batched.values())


def test_tagging_ast_scores(env):
    clips, store, context = env
    run_batch(make("tagging", context, top_k=4, min_score=0.0), clips, store)
    from transformers import AutoConfig

    labels = set(AutoConfig.from_pretrained(str(context["tiny_models_dir"] / "ast")).id2label.values())
    for rec in results(store, "tagging", clips).values():
        tags = rec["output"]["labels"]
        scores = [t["score"] for t in tags]
        assert len(tags) == 4 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert {t["label"] for t in tags} <= labels
    cut = make("tagging", context, top_k=4, min_score=0.5)
    cut.ensure_loaded()
    outs = cut.process([Item(c, {"prepare": store.get("prepare", c.id)}, store.media_dir(c.id)) for c in clips])
    assert all(t["score"] >= 0.5 for o in outs for t in o["labels"])


def test_audio_and_music_caption_with_our_model(env):
    clips, store, context = env
    assert run_batch(make("audio_caption", context, max_new_tokens=6), clips, store)["ok"] == len(clips)
    caps = results(store, "audio_caption", clips)
    assert all(r["output"]["caption"] and r["model"].startswith("fusionaudio:") for r in caps.values())
    # music captioning follows tagging: no music tag scoring >= 1.01 -> skipped with the reason
    run_batch(make("music_caption", context, min_tag_score=1.01, max_new_tokens=4), clips[:1], store)
    rec = store.get("music_caption", clips[0].id)
    assert rec["status"] == "skipped" and "no music detected" in rec["error"]


def test_visual_caption_on_frames_only(env):
    clips, store, context = env
    run_batch(make("visual_caption", context, max_new_tokens=3), clips, store)
    recs = results(store, "visual_caption", clips)
    assert recs["speech"]["status"] == "skipped" and "audio-only" in recs["speech"]["error"]
    video = recs["scene_video"]
    assert video["status"] == "ok"
    assert len(video["output"]["frame_captions"]) == len(store.get("prepare", "scene_video")["output"]["frames"])


def test_clap_filter_scores_and_threshold(env, tmp_path):
    clips, store, context = env
    for c in clips:
        store.put("fusion", c.id, "ok", output={"caption": f"a recording called {c.id}", "cues": []})
    keep_all = make("clap_filter", context, threshold=-1.0)
    run_batch(keep_all, clips, store)
    scores = {c.id: store.get("clap_filter", c.id)["output"]["score"] for c in clips}
    from fusionaudio.retrieval.clap import ClapDualEncoder

    enc = ClapDualEncoder(str(context["tiny_models_dir"] / "clap"))
    a = enc.encode_audio([store.get("prepare", c.id)["output"]["audio"] for c in clips])
    t = enc.encode_text([f"a recording called {c.id}" for c in clips])
    np.testing.assert_allclose(list(scores.values()), np.sum(a * t, axis=1), atol=1e-4)
    mid = float(np.median(list(scores.values())))
    strict = ResultStore(tmp_path)
    for c in clips:
        for s in ("prepare", "fusion"):
            strict.put(s, c.id, "ok", output=store.get(s, c.id)["output"])
    run_batch(make("clap_filter", context, threshold=mid), clips, strict)
    for c in clips:
        rec = strict.get("clap_filter", c.id)
        assert rec["output"]["score"] == pytest.approx(scores[c.id], abs=1e-4)
        assert rec["status"] == ("ok" if rec["output"]["score"] >= mid else "filtered")
    assert {strict.get("clap_filter", c.id)["status"] for c in clips} == {"ok", "filtered"}


def test_clap_audio_embedding_does_not_depend_on_the_batch(env):
    """The tiny CLAP crops clips longer than 2 s at random: the local and Ray engines batch clips differently,
    so each clip's crop must be its own, whatever else is in the batch."""
    clips, store, context = env
    from fusionaudio.retrieval.clap import ClapDualEncoder

    enc = ClapDualEncoder(str(context["tiny_models_dir"] / "clap"))
    paths = [store.get("prepare", c.id)["output"]["audio"] for c in clips]
    together = enc.encode_audio(paths)
    alone = np.concatenate([enc.encode_audio([p]) for p in paths])
    reversed_batch = enc.encode_audio(paths[::-1])[::-1]
    np.testing.assert_allclose(alone, together, atol=1e-6)
    np.testing.assert_allclose(reversed_batch, together, atol=1e-6)


def test_music_caption_with_a_tiny_qwen2_audio(env, tmp_path):
    clips, prepared, context = env
    store = ResultStore(tmp_path)
    for c in clips:
        store.put("prepare", c.id, "ok", output=prepared.get("prepare", c.id)["output"])
        store.put("tagging", c.id, "ok", output={"labels": [{"label": "Music" if c.id.startswith("melody") else "Speech",
                                                             "score": 0.9}]})
    stage = make("music_caption", context, backend="qwen2_audio", model="tiny", max_new_tokens=4, min_tag_score=0.5)
    counts = run_batch(stage, clips, store)
    assert counts["skipped"] == 2 and counts["ok"] + counts["error"] == 2
    rec = store.get("music_caption", "melody")
    assert rec["model"] == "qwen2_audio:tiny" and (rec["status"] == "ok") == bool(rec["output"])
    assert "no music detected" in store.get("music_caption", "speech")["error"]
