"""Judge replies that cannot be parsed: scored as the published protocol scores them, counted, warned
about, and past ``--max_unparsed`` (default 10 %) the run fails with the report written."""

from __future__ import annotations

import json

import pytest
from fake_http import JsonServer, chat_reply

from fusionaudio.evaluate import qa


@pytest.fixture(scope="module")
def judge_url():
    """A judge that rates 4, except for questions containing MUMBLE, where it forgets the rating."""

    def respond(path, headers, body):
        prompt = body["messages"][-1]["content"]
        if "Rating: N" in prompt:
            reply = "Looks fine to me." if "MUMBLE" in prompt else "Close to the references.\nRating: 4"
        else:
            reply = "Both are fine." if "MUMBLE" in prompt else "8 6"
        return 200, chat_reply(reply)

    with JsonServer(respond) as server:
        yield server.url


def _preds(tmp_path, n: int, mumbled: int):
    recs = [{"audio_id": f"a{k}", "instruction": f"Question {k}{' MUMBLE' if k < mumbled else ''}?",
             "output": "water", "prediction": "Water."} for k in range(n)]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(recs))
    return path


def _main(path, url, task, *extra):
    return qa.main([task, "--input", str(path), "--judge_base_url", url, "--judge_model", "m", "--no_cache",
                    "--judge_api_key_env", "", *extra])


@pytest.mark.parametrize("task", ["graded", "chat"])
def test_every_reply_unparsable_fails_the_run_with_the_report_written(tmp_path, judge_url, capsys, task):
    path = _preds(tmp_path, 32, 32)
    assert _main(path, judge_url, task) == 1
    err = capsys.readouterr().err
    assert f"error: {task}: 32 of 32 judge replies could not be parsed" in err and "--max_unparsed" in err
    report = json.loads((tmp_path / f"preds.{task}.json").read_text())
    assert report["metrics"]["n_unparsed_judge_replies"] == 32
    if task == "graded":  # the published protocol's scoring is untouched: an unparsed reply rates 0
        assert report["metrics"]["judge_score"] == 0.0 and report["metrics"]["success_rate"] == 0.0
    else:  # AIR-Bench chat leaves them out of the mean
        assert report["metrics"]["judge_score"] is None and report["metrics"]["parse_success_rate"] == 0.0


def test_a_few_unparsable_replies_are_warned_about_and_scored_as_published(tmp_path, judge_url, capsys):
    path = _preds(tmp_path, 20, 1)
    assert _main(path, judge_url, "graded") == 0
    err = capsys.readouterr().err
    assert "warning: graded: 1 of 20 judge replies could not be parsed" in err
    assert f"wrote {tmp_path / 'preds.graded.json'}" in err
    metrics = json.loads((tmp_path / "preds.graded.json").read_text())["metrics"]
    assert metrics["n_unparsed_judge_replies"] == 1
    assert metrics["judge_score"] == pytest.approx((19 * 4 + 0) / 20 * 20)  # the unparsed one rates 0
    assert _main(_preds(tmp_path, 20, 20), judge_url, "graded", "--max_unparsed", "1") == 0  # accepted when asked
