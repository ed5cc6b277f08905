"""The fuzz corpus through the front end: each class has its outcome, nothing else escapes."""

import re

import pytest
import torch

from fusionaudio import audio
from fusionaudio.audio import AudioError
from fuzz_corpus import make_corpus, mutants


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, make_corpus(folder)


def test_every_corpus_file_has_its_outcome(corpus):
    _, cases = corpus
    wrong = []
    for path, expected in cases:
        try:
            fb = audio.load_fbank(path)
            outcome = "ok" if fb.shape == (1024, 128) and bool(torch.isfinite(fb).all()) else "bad features"
        except AudioError as exc:
            named = exc.path is not None and str(path) in str(exc)
            outcome = str(exc) if named else f"unnamed: {exc}"
        if (expected == "ok") != (outcome == "ok") or (expected != "ok" and not re.search(expected, outcome)):
            wrong.append((path.name, expected, outcome))
    assert not wrong, wrong


def test_batch_collect_keeps_the_good_files_in_order(corpus):
    _, cases = corpus
    paths = [p for p, _ in cases]
    fbanks, infos, failures = audio.load_fbank_batch(paths, errors="collect")
    good = [i for i, (_, e) in enumerate(cases) if e == "ok"]
    assert sorted(failures) == [i for i in range(len(cases)) if i not in good]
    assert [info.path for info in infos] == [str(paths[i]) for i in good]
    assert fbanks.shape[0] == len(good) and torch.isfinite(fbanks).all()


def test_mutated_files_are_features_or_a_named_error(corpus):
    folder, _ = corpus
    for path in mutants(folder, 45):
        try:
            fb = audio.load_fbank(path)
        except AudioError as exc:
            assert str(path) in str(exc), exc
        else:
            assert fb.shape == (1024, 128) and torch.isfinite(fb).all(), path
