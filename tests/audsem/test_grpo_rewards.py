"""The GRPO rewards on hand-made completions: every branch of upstream's three reward functions."""

import pytest

from fusionaudio.audsem.rewards import accuracy, completion_texts, length, strict_format


def conv(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_completions_may_be_conversational_or_plain_and_nothing_else():
    assert completion_texts(["a", [{"role": "assistant", "content": "b"}]]) == ["a", "b"]
    with pytest.raises(TypeError, match="completion 1"):
        completion_texts(["a", 3])
    with pytest.raises(TypeError, match="completion 0"):
        completion_texts([[]])


def test_accuracy_exact_answer_tag_branch():
    texts = ["<think>hm</think>\n<answer> B. a dog barks </answer>",  # the tag's text, stripped, equals the answer
             "<think>hm</think>\n<answer>B. a cat</answer>",           # a different answer
             "  B. a dog barks \n",                                     # no tag: the whole completion, stripped
             "<answer>B. a dog\nbarks</answer>"]                        # the tag spans lines: no match (no DOTALL)
    assert accuracy(conv(*texts), ["B. a dog barks"] * 4) == [1.0, 0.0, 1.0, 0.0]
    assert accuracy(texts, ["B. a dog barks"] * 4) == [1.0, 0.0, 1.0, 0.0]  # plain strings score the same
    assert accuracy(conv("<answer>b. a dog barks</answer>"), ["B. a dog barks"]) == [0.0]  # exact: case counts


def test_accuracy_math_verify_branch():
    # math_verify parses the whole completion, so an equal number anywhere in it counts (upstream does this too)
    assert accuracy(conv("<answer>\\frac{1}{2}</answer>", "<answer>0.25</answer>"), ["0.5", "0.5"]) == [1.0, 0.0]
    assert accuracy(conv("<think>I count 3 dogs</think><answer>A. three</answer>"), ["3"]) == [1.0]
    assert accuracy(conv("<think>I count 4 dogs</think><answer>A. three</answer>"), ["3"]) == [0.0]


def test_accuracy_survives_a_math_verify_error(monkeypatch):
    import math_verify

    def broken(*a, **k):
        raise TimeoutError("parsing timed out")

    monkeypatch.setattr(math_verify, "parse", broken)
    # the error means "not equal"; the exact comparison still runs
    assert accuracy(conv("<answer>2</answer>", "<answer>3</answer>"), ["2", "2"]) == [1.0, 0.0]


def test_accuracy_checks_its_inputs():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy(conv("a", "b"), ["a"])
    assert accuracy(conv("<answer>x</answer>"), "x") == [1.0]  # one answer for all


def test_strict_format_two_and_three_sections():
    two = "<think>a\nb</think>\n<answer>c</answer>"
    three = "<think>a</think>\n<semantic_elements>what: b</semantic_elements>\n<answer>c</answer>"
    bad = ["x <think>a</think><answer>c</answer>",        # text before
           "<think>a</think><answer>c</answer> thanks",   # text after
           "<answer>c</answer><think>a</think>",          # wrong order
           "<Think>a</Think><answer>c</answer>"]          # tags are lower-case
    assert strict_format(conv(two, three, *bad)) == [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert strict_format(conv(two, three, *bad), sections=3) == [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert strict_format([two], sections=2) == [0.5]
    with pytest.raises(ValueError, match="sections must be 2 or 3"):
        strict_format([two], sections=4)


def words(n):
    return " ".join(["w"] * n)


def test_length_penalises_thinking_over_the_target():
    texts = [f"<think>{words(n)}</think><answer>x</answer>" for n in (0, 95, 100, 103, 105, 106, 120)]
    # clip(0.1 * (100 - n) + 0.5, 0, 1)
    assert length(conv(*texts)) == pytest.approx([1.0, 1.0, 0.5, 0.2, 0.0, 0.0, 0.0])


def test_length_encourages_the_target_from_below_when_asked():
    texts = [f"<think>{words(n)}</think>" for n in (80, 90, 94, 96, 100, 103)]
    # n <= 100: clip(1 - 0.1 * (100 - n) + 0.5, 0, 1); above: as without the option
    assert length(conv(*texts), encourage_target_length=True) == pytest.approx([0.0, 0.5, 0.9, 1.0, 1.0, 0.2])
    assert length(conv(*texts)) == pytest.approx([1.0, 1.0, 1.0, 0.9, 0.5, 0.2])
    assert length(conv(*texts), target_length=10, alpha=0.5, delta=0.0) == [0.0] * 6


def test_length_counts_the_whole_completion_without_a_one_line_think():
    # no <think> tag, or one spanning lines (upstream's pattern has no DOTALL): every word counts
    texts = [words(99), words(110), "<think>a\nb</think> " + words(3)]
    assert length(conv(*texts)) == pytest.approx([0.6, 0.0, 1.0])
    assert length(["<think>" + words(104) + "</think>" + words(50)]) == pytest.approx([0.1])
