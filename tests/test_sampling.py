"""The one sampling rule (fusionaudio.sampling) and that every surface follows it."""

from __future__ import annotations

import pytest

from fusionaudio.audsem.config import GENERATION_DEFAULTS as AUDSEM
from fusionaudio.errors import UsageError
from fusionaudio.gama.generation import GENERATION_DEFAULTS as GAMA
from fusionaudio.sampling import sampling_options


def test_defaults_are_the_familys():
    assert sampling_options(GAMA) == {"do_sample": True, "temperature": 0.1, "top_p": 0.95, "top_k": 300,
                                      "max_new_tokens": 1024, "num_beams": 1}
    assert sampling_options(AUDSEM) == {"do_sample": False, "max_new_tokens": 512}


@pytest.mark.parametrize("how", [dict(temperature=0), dict(temperature=0.0), dict(do_sample=False),
                                 dict(greedy=True), dict(greedy=True, temperature=0.7)])
def test_temperature_zero_greedy_and_do_sample_false_all_mean_greedy(how):
    opts = sampling_options(GAMA, **how)
    assert opts["do_sample"] is False and not {"temperature", "top_p", "top_k"} & set(opts)


def test_sampling_values_pass_through_and_are_validated_with_one_text():
    assert sampling_options(AUDSEM, do_sample=True, temperature=0.7, top_p=0.5, top_k=5)["temperature"] == 0.7
    for bad, text in [(dict(temperature=-1), "temperature must be >= 0 (0 means greedy)"),
                      (dict(top_p=0), "top_p must be in (0, 1]"), (dict(top_k=-2), "top_k must be >= 0"),
                      (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
                      (dict(num_beams=0), "num_beams must be >= 1"),
                      (dict(repetition_penalty=0), "repetition_penalty must be > 0"),
                      (dict(temperature=float("nan")), "temperature must be finite")]:
        with pytest.raises(UsageError, match=text.replace("(", r"\(").replace(")", r"\)")):
            sampling_options(GAMA, **bad)
    with pytest.raises(TypeError, match="unknown generation option"):
        sampling_options(GAMA, beam_width=2)


def test_server_and_cli_share_the_rule():
    from fusionaudio.serve.chat import settings_for
    from fusionaudio.serve.errors import ApiError

    s = settings_for(GAMA, 16, temperature=0)
    assert s.do_sample is False
    s = settings_for(AUDSEM, 16)
    assert s.do_sample is False  # AudSemThinker's own default (greedy), not GAMA's
    with pytest.raises(ApiError) as err:
        settings_for(GAMA, 16, temperature=-1)
    assert err.value.status == 400 and "temperature must be >= 0 (0 means greedy)" in str(err.value.message)
