"""Fusion and QA: an OpenAI-compatible server on 127.0.0.1 started here, and a tiny local Llama."""

from pathlib import Path

import pytest
from pipeline_helpers import FakeChatServer

from fusionaudio.pipeline.config import COMMON_DEFAULTS
from fusionaudio.pipeline.inputs import Clip
from fusionaudio.pipeline.stages import STAGE_CLASSES
from fusionaudio.pipeline.stages.base import run_batch
from fusionaudio.pipeline.stages.qa import MalformedQA, parse_qa
from fusionaudio.pipeline.store import ResultStore


@pytest.fixture(scope="module")
def server():
    with FakeChatServer(slow_s=3.0) as s:
        yield s


def make(name, context, **cfg):
    cls = STAGE_CLASSES[name]
    return cls({**COMMON_DEFAULTS, **cls.DEFAULTS, **cfg}, context)


def seeded_store(tmp_path, transcripts: dict[str, str]) -> tuple[list[Clip], ResultStore]:
    store = ResultStore(tmp_path)
    clips = [Clip(cid, f"/x/{cid}.wav") for cid in transcripts]
    for c in clips:
        store.put("prepare", c.id, "ok", output={"audio": "/x/a.wav", "frames": []})
        store.put("asr", c.id, "ok", output={"text": transcripts[c.id]})
        store.put("tagging", c.id, "ok", output={"labels": [{"label": "Speech", "score": 0.9}]})
        store.put("visual_caption", c.id, "skipped", error="audio-only clip (no video frames)")
    return clips, store


def openai(server, **kw):
    return {"backend": "openai", "base_url": server.base_url, "model": "fake", "timeout_s": 1.0, "max_retries": 1, **kw}


def test_fusion_over_http_isolates_endpoint_errors_and_timeouts(server, tmp_path):
    clips, store = seeded_store(tmp_path, {"good": "hello there", "boom": "FAIL500", "slow": "SLOW", "good2": "bye"})
    counts = run_batch(make("fusion", {}, **openai(server)), clips, store)
    assert counts == {"done_before": 0, "ok": 2, "error": 2, "skipped": 0, "filtered": 0}
    good = store.get("fusion", "good")
    assert good["output"]["caption"] == "a clip described from 2 cues (Speech transcript (ASR); Sound events " \
                                        "(tagger, with scores))."  # 'Caption:' prefix cleaned
    assert good["output"]["cues"] == ["asr", "tagging"] and good["model"] == "openai:fake"
    assert "HTTP 500" in store.get("fusion", "boom")["error"] and server.base_url in store.get("fusion", "boom")["error"]
    assert "timed out" in store.get("fusion", "slow")["error"].lower() or "timeout" in store.get("fusion", "slow")["error"].lower()


def test_fusion_template_file_and_no_cue_skip(server, tmp_path):
    clips, store = seeded_store(tmp_path, {"a": "one"})
    tpl = tmp_path / "t.txt"
    tpl.write_text("Cues:\n{cues}\nSay it in French.")
    stage = make("fusion", {}, **openai(server), template=str(tpl))
    run_batch(stage, clips, store)
    assert store.get("fusion", "a")["settings"]["template"] == str(tpl)
    prompt = [p for p in server.attempts if "French" in p][0]
    assert prompt.startswith("Cues:\n- Speech transcript (ASR): one\n- Sound events (tagger, with scores): Speech (0.90)")
    empty = ResultStore(tmp_path / "e")
    empty.put("prepare", "z", "ok", output={"audio": "/x", "frames": []})
    run_batch(stage, [Clip("z", "/x")], empty)
    assert empty.get("fusion", "z")["status"] == "skipped" and "no cues" in empty.get("fusion", "z")["error"]


def test_fusion_with_a_tiny_local_llama(tmp_path, tmp_path_factory):
    clips, store = seeded_store(tmp_path, {"a": "one", "b": "two words"})
    context = {"tiny_models_dir": tmp_path_factory.getbasetemp() / "pipeline_tiny"}
    stage = make("fusion", context, backend="local", model="tiny", max_tokens=6)
    run_batch(stage, clips, store)
    recs = [store.get("fusion", c.id) for c in clips]
    assert all(r["status"] in ("ok", "error") for r in recs)
    assert recs[0]["model"] == "local:tiny"
    # greedy and batched: the same reply as one prompt at a time
    solo = stage.llm.complete([stage.prompt(stage_item(store, clips[1]))])[0]
    assert stage.llm.complete([stage.prompt(stage_item(store, c)) for c in clips])[1] == solo


def stage_item(store, clip):
    from fusionaudio.pipeline.stages.base import Item

    return Item(clip, {s: store.get(s, clip.id) for s in ("prepare", "asr", "tagging", "visual_caption")}, Path("/x"))


def test_parse_qa():
    text = 'Sure:\n```json\n[{"question": " Q1 ", "answer": "A1"}, {"question": "Q2", "answer": "A2"}]\n```'
    assert parse_qa(text, 5) == [{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": "A2"}]
    assert len(parse_qa(text, 1)) == 1
    for bad, why in [("no json", "no JSON array"), ("[1, 2]", "item 0 is not an object"),
                     ('[{"question": "q"}]', "lacks"), ("[]", "empty"), ("[{,]", "does not parse")]:
        with pytest.raises(MalformedQA, match=why):
            parse_qa(bad, 3)


def test_qa_retries_malformed_output_a_bounded_number_of_times(server, tmp_path):
    store = ResultStore(tmp_path)
    caps = {"once": "MALFORMED1 a dog barks", "always": "MALFORMED_ALWAYS rain", "fine": "a bell rings"}
    clips = [Clip(cid, "/x") for cid in caps]
    for c in clips:
        store.put("prepare", c.id, "ok", output={"audio": "/x", "frames": []})
        store.put("fusion", c.id, "ok", output={"caption": caps[c.id], "cues": ["asr"]})
        store.put("clap_filter", c.id, "ok", output={"score": 0.3, "threshold": 0.1, "kept": True})
    before = dict(server.attempts)
    run_batch(make("qa", {}, **openai(server), parse_retries=2, num_pairs=2), clips, store)
    once, always, fine = (store.get("qa", c) for c in caps)
    assert once["status"] == "ok" and once["output"]["attempts"] == 2
    assert fine["output"]["attempts"] == 1 and fine["output"]["pairs"][0]["answer"] == "a bell rings"
    assert always["status"] == "error" and "malformed LLM output after 3 attempt(s)" in always["error"]
    asked = {p: n - before.get(p, 0) for p, n in server.attempts.items() if "MALFORMED_ALWAYS rain" in p}
    assert list(asked.values()) == [3]  # 1 + parse_retries, then given up
