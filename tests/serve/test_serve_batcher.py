"""The batcher and the GAMA backend adapter, in process, on the bundled demo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionaudio.audio import load_fbank
from fusionaudio.gama.inference import Request
from fusionaudio.inference import create_inference
from fusionaudio.serve.backend import GamaBackend, GenSettings, Job, _cut_at_stop, _held_back
from fusionaudio.serve.batcher import Batcher

CLIP = Path(__file__).resolve().parents[2] / "data" / "example" / "demo_clip.wav"
GREEDY = GenSettings(do_sample=False, temperature=0.1, top_p=0.95, top_k=300, max_tokens=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def engine():
    return create_inference("gama")


@pytest.fixture(scope="module")
def backend(engine):
    return GamaBackend(engine)


@pytest.fixture(scope="module")
def fbank():
    return load_fbank(CLIP)


def job(question, fbank=None, settings=GREEDY, **kw):
    return Job(question, fbank, settings=settings, **kw)


def test_adapter_batch_equals_the_inference_object(engine, backend, fbank):
    questions = ["Describe the audio.", "What is the main sound?", "How many sounds are there?"]
    expected = engine.generate([Request(q, fbank) for q in questions], do_sample=False, max_new_tokens=GREEDY.max_tokens)
    results = backend.run([job(q, fbank) for q in questions])
    assert [r.text for r in results] == expected
    assert all(r.batch_size == 3 for r in results)


def test_per_row_max_tokens_and_stop_in_one_batch(backend, fbank):
    full = backend.run([job("Describe the audio.", fbank)])[0]
    word = full.text.split()[2]
    rows = backend.run([job("Describe the audio.", fbank, GenSettings(False, 1, 1, 1, max_tokens=3)),
                        job("Describe the audio.", fbank, GenSettings(False, 1, 1, 1, max_tokens=40, stop=(word,))),
                        job("Describe the audio.", fbank)])
    assert rows[0].completion_tokens == 3 and rows[0].finish_reason == "length"
    assert rows[1].finish_reason == "stop" and word not in rows[1].text and full.text.startswith(rows[1].text)
    assert rows[2].text == full.text


def test_stream_deltas_concatenate_to_the_answer(backend, fbank):
    pieces: list[str] = []
    result = backend.run([job("Describe the audio.", fbank, on_delta=pieces.append), job("Hi?", fbank)])[0]
    assert len(pieces) > 3 and "".join(pieces) == result.text


def test_a_cancelled_row_stops_and_frees_its_batch(backend, fbank):
    """A client that hangs up (``job.cancel()``, what the API does) stops its row at the next token; the
    other rows of the batch are unchanged, and a batch whose rows are all cancelled stops."""
    long = GenSettings(False, 1, 1, 1, max_tokens=40)
    alone = backend.run([job("What do you hear?", fbank, long)])[0]
    leaving = job("Describe the audio.", fbank, long)
    leaving.on_delta = lambda _text: leaving.cancel()  # hang up after the first piece
    rows = backend.run([leaving, job("What do you hear?", fbank, long)])
    assert rows[0].finish_reason == "cancelled" and rows[0].completion_tokens < alone.completion_tokens
    assert (rows[1].text, rows[1].completion_tokens) == (alone.text, alone.completion_tokens)
    gone = [job("Describe the audio.", fbank, long) for _ in range(2)]
    for j in gone:
        j.on_delta = lambda _text, j=j: j.cancel()
    assert all(r.finish_reason == "cancelled" and r.completion_tokens < 10 for r in backend.run(gone))


def test_stop_helpers():
    assert _cut_at_stop("a loud tone, then", (",", "then")) == ("a loud tone", True)
    assert _cut_at_stop("no stop here", ("xyz",)) == ("no stop here", False)
    assert _held_back("a loud th", ("then",)) == 2  # "th" may still become "then"
    assert _held_back("a loud", ("then",)) == 0


class FailingBackend:
    """The real backend, except that a batch holding the question "boom" raises."""

    def __init__(self, backend):
        self.backend, self.arch = backend, backend.arch

    def batch_key(self, job):
        return self.backend.batch_key(job)

    def run(self, jobs):
        if any(j.question == "boom" for j in jobs):
            raise RuntimeError("boom inside generate")
        return self.backend.run(jobs)


def test_a_failing_request_does_not_take_down_its_batch(backend, fbank):
    questions = ["Describe the audio.", "boom", "What is the main sound?", "How many sounds?"]
    alone = [backend.run([job(q, fbank)])[0].text for q in questions if q != "boom"]
    batcher = Batcher(FailingBackend(backend), max_batch_size=8, max_wait_s=0.0)
    futures = [batcher.submit(job(q, fbank)) for q in questions]  # all queued before the worker starts
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom inside generate"):
            futures[1].result(timeout=60)
        assert [f.result(timeout=60).text for i, f in enumerate(futures) if i != 1] == alone
        assert batcher.stats["retried_batches"] == 1 and batcher.stats["failed"] == 1
        assert batcher.alive
        assert batcher.submit(job("Describe the audio.", fbank)).result(timeout=60).text == alone[0]
    finally:
        batcher.stop()


def test_groups_batch_only_compatible_requests(backend, fbank):
    sampled = GenSettings(True, 0.7, 0.9, 50, max_tokens=10)
    seeded = GenSettings(True, 0.7, 0.9, 50, max_tokens=10, seed=3)
    jobs = [job("a", fbank), job("b"), job("c", fbank), job("d", fbank, sampled), job("e", fbank, seeded),
            job("f", fbank, seeded)]
    batcher = Batcher(backend, max_batch_size=8, max_wait_s=0.0)
    futures = [batcher.submit(j) for j in jobs]
    batcher.start()
    try:
        sizes = [f.result(timeout=60).batch_size for f in futures]
    finally:
        batcher.stop()
    # greedy+audio together; text-only, sampled and each seeded request on their own
    assert sizes == [2, 1, 2, 1, 1, 1]
    assert batcher.stats["batches"] == 5


def test_batcher_rejects_bad_settings(backend):
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(backend, max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        Batcher(backend, max_wait_s=-1)


def test_seeded_sampling_is_reproducible(backend, fbank):
    seeded = GenSettings(True, 1.0, 0.9, 50, max_tokens=20, seed=11)
    torch.manual_seed(0)
    a = backend.run([job("Describe the audio.", fbank, seeded)])[0].text
    torch.manual_seed(1)
    b = backend.run([job("Describe the audio.", fbank, seeded)])[0].text
    assert a == b


def test_worker_waits_for_requests_still_being_decoded_but_not_for_nothing(backend, fbank):
    import time

    batcher = Batcher(backend, max_batch_size=8, max_wait_s=30.0).start()
    try:
        with batcher.preparing():  # a second request is still being decoded
            first = batcher.submit(job("Describe the audio.", fbank))
            time.sleep(0.3)
            second = batcher.submit(job("What is the main sound?", fbank))
        assert first.result(timeout=60).batch_size == 2 and second.result(timeout=60).batch_size == 2
        # nothing else in preparation: a lone request does not sit out the 30 s max_wait
        assert batcher.submit(job("Describe the audio.", fbank)).result(timeout=20).batch_size == 1
    finally:
        batcher.stop()
