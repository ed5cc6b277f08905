"""QA evaluators and the judge client, against a deterministic OpenAI-compatible server on 127.0.0.1."""

import json
import threading

import pytest
from fake_http import JsonServer, chat_reply

from fusionaudio.evaluate import qa
from fusionaudio.evaluate.judge import JudgeError, OpenAICompatClient
from fusionaudio.evaluate.records import EvalInputError

OPTS = "Options: [Sneeze, Sniff, Cough, Sigh]"
INSTR = "Choose the most suitable answer from options to respond the question in next line.\nWhat is the sound?\n" + OPTS


class FakeJudge:
    """Answers chat completions by prompt type; fails the first ``fail_first`` requests with ``fail_status``."""

    def __init__(self, fail_first=1, fail_status=429):
        self.calls, self.prompts, self.bodies, self.lock = 0, [], [], threading.Lock()
        self.fail_first, self.fail_status = fail_first, fail_status
        self.server = JsonServer(self.respond)
        self.url = self.server.url

    def respond(self, path, headers, body):
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.fail_first
            if not failing:
                self.prompts.append(body["messages"][-1]["content"])
                self.bodies.append(body)
        if failing:
            return self.fail_status, {"error": "slow down"}, {"Retry-After": "0"}
        prompt = body["messages"][-1]["content"]
        if "single letter" in prompt:
            reply = "B"
        elif "Rating: N" in prompt:
            reply = "The answer matches the references closely.\nRating: 4"
        else:
            reply = "8 6"
        return 200, chat_reply(reply)

    def client(self, cache_dir, **kw):
        kw.setdefault("backoff_base", 0.01)
        return OpenAICompatClient(self.url, "judge-model", api_key_env="FA_TEST_NO_SUCH_KEY", cache_dir=cache_dir, **kw)


@pytest.fixture
def judge():
    j = FakeJudge()
    yield j
    j.server.close()


def write(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def test_rule_match():
    opts = ["Sneeze", "Sniff", "Cough", "Sigh"]
    for answer in ["B", "(B)", "B.", "B) Sniff", "b", "The answer is B.", "Answer: (b)", "sniff", "Sniff."]:
        expected = None if answer == "b" else "B"
        assert qa.rule_match(answer, opts) == expected, answer
    for answer in ["A dog barks.", "", "I think it is a sniffing sound", "The answer is a sneeze", "E"]:
        assert qa.rule_match(answer, opts) is None, answer
    assert qa.rule_match("C", ["yes", "no"]) is None  # only two options: A/B


def test_parse_options_and_ground_truth():
    assert qa.parse_options(INSTR) == ["Sneeze", "Sniff", "Cough", "Sigh"]
    grounding = "When?\nOptions: [[0.44, 2.38], [3.85, 10.02], [3.42, 4.11], [1.51, 7.99]]"
    opts = qa.parse_options(grounding)
    assert opts == ["[0.44, 2.38]", "[3.85, 10.02]", "[3.42, 4.11]", "[1.51, 7.99]"]
    assert qa.ground_truth_letter("[3.42, 4.11]", opts) == "C"
    assert qa.ground_truth_letter("(D)", opts) == "D"
    assert qa.parse_options("no options here") == []


def test_mcq_rules_then_judge_with_retry_and_cache(tmp_path, judge):
    recs = [
        {"audio_id": "1", "instruction": INSTR, "output": "Sniff", "prediction": "B", "task": "vocal", "dataset": "VS"},
        {"audio_id": "2", "instruction": INSTR, "output": "Cough", "prediction": "(C) Cough", "task": "vocal"},
        {"audio_id": "3", "instruction": INSTR, "output": "Sigh", "prediction": "Sneeze", "task": "vocal"},
        {"audio_id": "4", "instruction": INSTR, "output": "Sniff", "prediction": "Someone inhales through the nose",
         "task": "other"},
        {"audio_id": "5", "instruction": INSTR, "output": "Sniff", "prediction": None, "task": "other"},  # failed
    ]
    src = write(tmp_path / "p.json", recs)
    client = judge.client(tmp_path / "cache")
    res = qa.evaluate_mcq(src, str(tmp_path / "o.json"), client=client)
    assert client.stats == {"requests": 2, "retries": 1, "cache_hits": 0}
    m = res["metrics"]
    assert m["accuracy"] == pytest.approx(3 / 5) and res["meta"]["n_null_predictions"] == 1
    assert (m["n_rule_matched"], m["n_llm_aligned"], m["n_unresolved"]) == (3, 1, 1)
    assert m["by_task"] == {"vocal": {"accuracy": pytest.approx(2 / 3), "n": 3}, "other": {"accuracy": 0.5, "n": 2}}
    assert judge.calls == 2  # one 429, then the retry; rule-matched and empty answers never reach the judge
    assert "Someone inhales" in judge.prompts[0] and "B. Sniff" in judge.prompts[0]
    again = qa.evaluate_mcq(src, str(tmp_path / "o2.json"), client=judge.client(tmp_path / "cache"))
    assert judge.calls == 2 and again["metrics"]["accuracy"] == pytest.approx(3 / 5)  # rerun: all cached
    no_judge = qa.evaluate_mcq(src, str(tmp_path / "o3.json"))
    assert no_judge["metrics"]["n_unresolved"] == 2 and no_judge["metrics"]["accuracy"] == pytest.approx(2 / 5)


def test_graded_and_chat(tmp_path, judge):
    recs = [
        {"audio_id": "a", "instruction": "What is flowing?", "output": "water", "prediction": "Water.",
         "meta_info": "A stream flows."},
        {"audio_id": "a", "instruction": "What is flowing?", "output": "a stream", "prediction": "Water."},
        {"audio_id": "a", "instruction": "What is flowing?", "output": "water", "prediction": "Water."},
        {"audio_id": "b", "instruction": "Is it raining?", "output": "yes", "prediction": "Yes, heavily."},
        {"audio_id": "c", "instruction": "Is it loud?", "output": "no", "prediction": None},  # inference failed
    ]
    src = write(tmp_path / "p.json", recs)
    client = judge.client(tmp_path / "cache", max_workers=4)
    graded = qa.evaluate_graded(src, client, str(tmp_path / "g.json"))
    m = graded["metrics"]
    assert m["n_questions"] == 3 and m["score_0_5"] == pytest.approx(4.0)
    assert m["judge_score"] == pytest.approx(80.0) and m["success_rate"] == 1.0
    flowing = next(p for p in judge.prompts if "What is flowing?" in p)
    assert "- water\n- a stream\n- water" in flowing  # every reference of the group, as the original keeps them
    assert {(b["temperature"], b["max_tokens"]) for b in judge.bodies} == {(0.0, 512)}
    chat = qa.evaluate_chat(src, client, str(tmp_path / "c.json"))
    cm = chat["metrics"]
    assert cm["model_score"] == pytest.approx(6.0) and cm["reference_score"] == 8.0
    assert cm["judge_score"] == pytest.approx(60.0) and cm["parse_success_rate"] == 1.0
    assert any("A stream flows." in p for p in judge.prompts)
    assert judge.bodies[-1]["max_tokens"] == 1024 and judge.bodies[-1]["temperature"] == 0.0
    assert judge.calls == 1 + 3 + 3  # 429, graded, chat (the empty answer is judged too, as the original does)
    assert graded["meta"]["judge_prompt"] == "default:graded" and len(graded["meta"]["judge_prompt_sha256"]) == 64
    assert "not comparable with published scores" in graded["meta"]["judge_prompt_note"]


def test_judge_reply_parsing_as_the_originals():
    assert qa.parse_graded("Explanation: close.\nRating: (4)") == (4.0, True)
    assert qa.parse_graded("Rating: 3.5") == (3.5, True)
    assert qa.parse_graded("Rating: 4/5") == (0.0, False) and qa.parse_graded("Rating: 7") == (0.0, False)
    assert qa.parse_graded("") == (0.0, False) and qa.parse_graded(None) == (0.0, False)
    assert qa.parse_chat("8 6") == (8.0, 6.0) and qa.parse_chat("8\n6") == (8.0, 6.0)
    assert qa.parse_chat("Scores: 8 6") == (None, None)  # not exactly two tokens
    assert qa.parse_chat("8 11") == (None, None) and qa.parse_chat("x 7") == (None, 7.0)


def test_two_file_mode_joins_on_audio_id_and_instruction(tmp_path, judge):
    refs = write(tmp_path / "refs.json", [
        {"audio_id": "a", "instruction": "Q1", "output": "water", "meta_info": "A stream."},
        {"audio_id": "a", "instruction": "Q1", "output": "a stream", "meta_info": "A stream."},
        {"audio_id": "b", "instruction": "Q2", "output": "rain", "meta_info": "Rain."},
        {"audio_id": "c", "instruction": "Q3", "output": "wind", "meta_info": "Wind."}])
    preds = write(tmp_path / "preds.json", [
        {"audio_id": "a", "instruction": "Q1", "output": "first"},
        {"audio_id": "b", "instruction": "Q2", "output": "drizzle"},
        {"audio_id": "a", "instruction": "Q1", "output": "last wins"}])
    client = judge.client(tmp_path / "cache")
    res = qa.evaluate_chat(preds, client, str(tmp_path / "c.json"), pred_key="output", references=refs)
    m = res["metrics"]
    assert m["n_questions"] == 2 and m["n_reference_groups_without_prediction"] == 1
    assert m["n_duplicate_prediction_keys"] == 1
    assert [d["prediction"] for d in res["details"]] == ["last wins", "drizzle"]
    assert any("A stream." in p and "last wins" in p and "water" in p for p in judge.prompts)
    graded = qa.evaluate_graded(preds, client, str(tmp_path / "g.json"), pred_key="output", references=refs)
    one = next(p for p in judge.prompts if "Q1" in p and "Rating: N" in p)
    assert "- water\n- a stream" in one
    with pytest.raises(EvalInputError, match="no prediction matches"):
        qa.evaluate_graded(write(tmp_path / "x.json", [{"audio_id": "z", "instruction": "Q", "output": "o"}]),
                           client, pred_key="output", references=refs)
    assert graded["metrics"]["n_questions"] == 2


def test_judge_prompt_templates(tmp_path, judge):
    from fusionaudio.evaluate.judge_prompts import load_prompt, reference_text

    tpl = tmp_path / "graded_original.txt"
    tpl.write_text("[Reference Answers]\n{reference_text}\n[Model Answer]\n{prediction}\n[Question]\n{question}\n"
                   "Rating: N")
    src = write(tmp_path / "p.json", [{"audio_id": "a", "instruction": "Q?", "output": "yes", "prediction": "Yes"},
                                      {"audio_id": "a", "instruction": "Q?", "output": "yes", "prediction": "Yes"}])
    res = qa.evaluate_graded(src, judge.client(tmp_path / "cache"), str(tmp_path / "g.json"), judge_prompt=str(tpl))
    sent = judge.prompts[-1]
    assert sent.startswith("[Reference Answers]\nMultiple reference answers are provided:\nReference 1: yes\n---\n"
                           "Reference 2: yes\n[Model Answer]\nYes\n[Question]\nQ?")
    import hashlib

    assert res["meta"]["judge_prompt_sha256"] == hashlib.sha256(tpl.read_bytes()).hexdigest()
    assert res["meta"]["judge_prompt_note"].startswith("custom prompt: not comparable")
    assert reference_text(["only"]) == "only"
    bad = tmp_path / "bad.txt"
    bad.write_text("{prediction} {nope}")
    with pytest.raises(EvalInputError, match=r"bad\.txt: unknown field\(s\) \['nope'\]"):
        load_prompt("graded", str(bad))
    bad.write_text("{question} only")
    with pytest.raises(EvalInputError, match="must use one of the fields"):
        load_prompt("chat", str(bad))
    bad.write_text("{prediction} {")
    with pytest.raises(EvalInputError, match="not a valid template"):
        load_prompt("chat", str(bad))


def test_mcq_judge_all_as_the_original(tmp_path, judge):
    recs = [{"audio_id": "1", "instruction": INSTR, "output": "Sniff", "prediction": "B"},
            {"audio_id": "2", "instruction": INSTR, "output": "Cough", "prediction": "(C) Cough"},
            {"audio_id": "3", "instruction": INSTR, "output": "Sniff", "prediction": None}]
    res = qa.evaluate_mcq(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"),
                          client=judge.client(tmp_path / "cache"), judge_all=True)
    m = res["metrics"]  # the judge answers B to everything: no rules first, so (C) Cough is judged wrong
    assert m["accuracy"] == 0.5 and m["n_rule_matched"] == 0 and m["n_skipped_null_predictions"] == 1
    assert {(b["temperature"], b["max_tokens"]) for b in judge.bodies} == {(0.0, 1)}
    assert "A. Sneeze\nB. Sniff\nC. Cough\nD. Sigh" in judge.prompts[0]
    assert judge.prompts[0].count("Choose the most suitable answer") == 1  # the eval file's first line stays
    q, opts = qa.original_judge_view("When?\nOptions: [[0.44, 2.38], [3.85, 10.02], [3.42, 4.11]]")
    assert opts == ["[0.44", "2.38]", "[3.85", "10.02]"]  # the original's plain comma split
    with pytest.raises(EvalInputError, match="judge_all needs a judge"):
        qa.evaluate_mcq(write(tmp_path / "q.json", recs), judge_all=True)


def test_yesno(tmp_path):
    recs = [
        {"audio_id": "a", "instruction": "Is a dog barking?", "output": "yes", "prediction": "Yes, a dog barks."},
        {"audio_id": "a", "instruction": "Is a dog barking?", "output": "no", "prediction": "Yes, a dog barks."},
        {"audio_id": "a", "instruction": "Is a dog barking?", "output": "yes", "prediction": "Yes, a dog barks."},
        {"audio_id": "b", "instruction": "Is it dry?", "output": "no", "prediction": "It is dry, yes."},
        {"audio_id": "c", "instruction": "Is it loud?", "output": "yes", "prediction": "Hard to say."},
        {"audio_id": "c", "instruction": "Is it loud?", "output": "no", "prediction": "Hard to say."},
        {"audio_id": "d", "instruction": "Is it windy?", "output": "Yes.", "prediction": "no wind"},
        {"audio_id": "d", "instruction": "Is it windy?", "output": "no", "prediction": "no wind"},
        {"audio_id": "e", "instruction": "What flows?", "output": "water", "prediction": "water"},
    ]
    res = qa.evaluate_yesno(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"))
    m = res["metrics"]  # a: majority yes -> right; b: wrong; c: unparsable; d: tie accepts either -> right
    assert m["n_questions"] == 4 and m["accuracy"] == pytest.approx(0.5)
    assert m["n_unparsable_predictions"] == 1 and m["n_groups_skipped_not_yes_no"] == 1


def test_judge_gives_up_and_does_not_retry_4xx(tmp_path):
    failing = FakeJudge(fail_first=100, fail_status=503)
    try:
        with pytest.raises(JudgeError, match="giving up after 3 attempts"):
            failing.client(tmp_path, max_retries=2).chat([{"role": "user", "content": "hi"}])
        assert failing.calls == 3
    finally:
        failing.server.close()
    denied = FakeJudge(fail_first=100, fail_status=401)
    try:
        with pytest.raises(JudgeError, match="HTTP 401"):
            denied.client(tmp_path, max_retries=5).chat_many([[{"role": "user", "content": "hi"}]])
        assert denied.calls == 1
    finally:
        denied.server.close()


def test_bad_inputs(tmp_path):
    src = write(tmp_path / "p.json", [{"instruction": INSTR, "output": "Sniff", "prediction": "B"},
                                      {"instruction": INSTR, "output": "Purr", "prediction": "B"}])
    with pytest.raises(EvalInputError, match=r"p\.json: record 1: ground truth 'Purr' is not one of the options"):
        qa.evaluate_mcq(src)
    res = qa.evaluate_mcq(src, str(tmp_path / "o.json"), skip_bad_options=True)
    assert res["metrics"]["n_skipped_bad_options"] == 1 and res["metrics"]["accuracy"] == 1.0
    src = write(tmp_path / "q.json", [{"instruction": "What?", "output": "A", "prediction": "B"}])
    with pytest.raises(EvalInputError, match=r"q\.json: record 0: no usable options"):
        qa.evaluate_mcq(src)


def test_cli_commands(tmp_path, judge):
    src = write(tmp_path / "p.json", [{"audio_id": "1", "instruction": INSTR, "output": "Sniff",
                                       "prediction": "a sniff, I think"}])
    cmds = qa.QACommands(judge_base_url=judge.url, judge_model="m", judge_cache_dir=str(tmp_path / "c"),
                         judge_api_key_env="FA_TEST_NO_SUCH_KEY")
    assert cmds.mcq(src, str(tmp_path / "o.json"))["accuracy"] == 1.0
    assert cmds.mcq(src, str(tmp_path / "o2.json"), judge_all=True)["accuracy"] == 1.0  # the judge says B
    assert json.loads((tmp_path / "o2.json").read_text())["meta"]["judge_all"] is True
    (tmp_path / "t.txt").write_text("{question}")
    custom = qa.QACommands(judge_base_url=judge.url, judge_model="m", judge_cache_dir=str(tmp_path / "c"),
                           judge_api_key_env="FA_TEST_NO_SUCH_KEY", judge_prompt=str(tmp_path / "t.txt"))
    with pytest.raises(EvalInputError, match="must use one of the fields"):  # an mcq prompt needs {answer}
        custom.mcq(src, str(tmp_path / "o3.json"))
    with pytest.raises(SystemExit, match="judge_base_url"):
        qa.QACommands().graded(src)
