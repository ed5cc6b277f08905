"""Generation: batching, KV cache, sampling defaults, seeds, eos."""

from __future__ import annotations

import pytest
import torch

from fusionaudio.gama.inference import FusionAudioInference, Request
from fusionaudio.gama.prompts import build_prompt

QUESTIONS = ["Describe the audio.", "How many sounds are there and which one comes first?", "Is it loud?"]


@pytest.fixture(scope="module")
def engine(tiny_base_dir):
    return FusionAudioInference(tiny_base_dir, device="cpu")


def test_batch_equals_one_by_one(engine, audio_files):
    paths = [str(p) for p in audio_files]
    greedy = dict(do_sample=False, max_new_tokens=12)
    batched = engine.predict_batch(paths, QUESTIONS, batch_size=3, **greedy)
    singles = [engine.predict(p, q, **greedy) for p, q in zip(paths, QUESTIONS)]
    assert batched == singles
    assert len(set(batched)) > 1, "a degenerate model would make this test meaningless"


def test_mixed_text_only_and_audio_requests(engine, audio_files):
    paths = [str(audio_files[0]), None, "empty"]
    batched = engine.predict_batch(paths, QUESTIONS, do_sample=False, max_new_tokens=8)
    assert batched[1] == engine.predict(None, QUESTIONS[1], do_sample=False, max_new_tokens=8)
    assert batched[0] == engine.predict(paths[0], QUESTIONS[0], do_sample=False, max_new_tokens=8)


def test_cached_generation_equals_full_recompute(engine, audio_files):
    """Greedy decoding with the KV cache = re-running the whole sequence each step."""
    model, tok = engine.model, engine.tokenizer
    fbank, _ = engine.load_audio(audio_files[1])
    ids = tok([build_prompt(QUESTIONS[0])], return_tensors="pt").input_ids
    new = model.generate(ids, None, fbank[None], max_new_tokens=6, do_sample=False,
                         eos_token_id=None, pad_token_id=0)[0]
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq, fbank[None]).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    assert new.tolist() == seq[0, ids.shape[1]:].tolist()


def test_reference_sampling_defaults(engine):
    cfg = engine.generation_config()
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens) == (True, 0.1, 0.95, 300, 1024)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 0)
    with pytest.raises(TypeError, match="unknown generation option"):
        engine.generation_config(beam_width=3)


def test_seed_makes_sampling_reproducible(engine, audio_files):
    kw = dict(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=10)
    a = engine.predict(audio_files[0], QUESTIONS[0], seed=123, **kw)
    b = engine.predict(audio_files[0], QUESTIONS[0], seed=123, **kw)
    assert a == b
    others = {engine.predict(audio_files[0], QUESTIONS[0], seed=s, **kw) for s in range(5)}
    assert len(others) > 1


def test_stops_at_eos_and_returns_only_new_text(engine):
    fbank = torch.zeros(1024, 128)
    lm_head = engine.model.llm.lm_head.weight
    saved = lm_head[2].clone()
    try:
        with torch.no_grad():
            lm_head[2] = engine.model.llm.model.norm.weight.sign() * 50.0  # eos dominates every step
        out = engine.generate([Request("Describe.", fbank)], do_sample=False, max_new_tokens=20)
    finally:
        with torch.no_grad():
            lm_head[2] = saved
    assert out == [""]


def test_bad_audio_raises_named_error(engine, tmp_path):
    from fusionaudio.audio import AudioError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="broken.wav"):
        engine.predict(bad, "Describe.")
    with pytest.raises(ValueError, match="2 questions for 1 audio"):
        engine.predict_batch([None], ["a", "b"])


def test_repetition_penalty_covers_the_prompt_not_the_padding():
    """As in the reference (whose generate sees the prompt ids), the prompt's tokens are penalised too."""
    from fusionaudio.gama.inference import PromptRepetitionPenalty

    proc = PromptRepetitionPenalty(2.0, torch.tensor([[0, 0, 5, 6], [4, 5, 6, 3]]),
                                   torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    out = proc(torch.tensor([[7], [7]]), torch.full((2, 10), 2.0))
    assert out[0].tolist() == [2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0]  # pad id 0 untouched
    assert out[1].tolist() == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]


def test_sdpa_attention_default_matches_eager(engine, audio_files):
    fbank, _ = engine.load_audio(audio_files[0])
    qformer_attn = engine.model.qformer.config._attn_implementation
    assert qformer_attn == "sdpa"  # the inference default
    with torch.no_grad():
        sdpa = engine.model.encode_audio(fbank[None])
        engine.model.set_attention("eager")
        try:
            eager = engine.model.encode_audio(fbank[None])
        finally:
            engine.model.set_attention("sdpa")
    assert (sdpa - eager).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="eager' or 'sdpa"):
        engine.model.set_attention("flash")


def test_predict_batch_streams_the_clips(engine, audio_files, monkeypatch):
    """Clips are decoded batch_size at a time, not all up front."""
    sizes = []
    real = engine.load_audio_batch

    def spy(paths):
        sizes.append(len(paths))
        return real(paths)

    monkeypatch.setattr(engine, "load_audio_batch", spy)
    paths = [str(audio_files[i % 3]) for i in range(5)]
    out = engine.predict_batch(paths, "Describe.", batch_size=2, do_sample=False, max_new_tokens=3)
    assert sizes == [2, 2, 1] and len(out) == 5
    assert out[0] == out[3]  # the same clip and question, in different batches


def test_row_limits_are_checked_per_request(engine, monkeypatch):
    """A batch whose rows stop at their own lengths (the server's watcher) is checked row by row: a long
    prompt with a small limit may share a batch with a short prompt with a large one."""
    from fusionaudio.gama.inference import Request

    long_q, short_q = "word " * 60, "hi"
    n_long = len(engine.tokenizer(build_prompt(long_q, None)).input_ids)
    room = 6  # new tokens the long prompt has left
    monkeypatch.setattr(engine, "max_positions", lambda: n_long + room)
    requests = [Request(long_q), Request(short_q)]
    with pytest.raises(ValueError, match="prompt too long"):
        engine.generate(requests, do_sample=False, max_new_tokens=room + 1)
    out = engine.generate(requests, do_sample=False, max_new_tokens=room + 1, row_max_new_tokens=[room, room + 1])
    assert len(out) == 2
