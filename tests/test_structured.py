"""The AudSemThinker three-section format: instructions, tolerant parsing, answer extraction, compliance."""

import pytest

from fusionaudio.structured import (
    CAPTION_INSTRUCTION,
    QA_INSTRUCTION,
    answer_text,
    build_instruction,
    compliance_rate,
    parse_semantic_elements,
    parse_structured,
    structured_instruction,
)

GOOD = (
    "<think>I hear a dog barking outside.</think>\n"
    "<semantic_elements>who: a dog\nwhat: its voice\nhow: barking\nwhen: at night\nwhere: a backyard</semantic_elements>\n"
    "<answer>A dog barks in a backyard.</answer>"
)

AUDSEM_ELEMENTS = """1. Sound-generating animated beings with descriptive adjectives:
   - Excited dog (barking)
2. Physical objects/substances generating sound:
   - Metal gate
3. Actions/mechanisms of sound generation:
   - Barking, gate creaking
4. Temporal context if present:
   - Evening
5. Spatial context and environment:
   - Suburban backyard
6. Acoustic surfaces and materials contributing to the sound:
   - Wooden fence
7. Signal-level sound descriptors (words that describe the sound itself without reference to the source, like "noise"):
   - Sharp bursts
8. Auditory sensation attributes:
   - Loud, repeated
9. Subjective/emotional descriptors:
   - Agitated"""


def test_well_formed_output_parses_completely():
    r = parse_structured(GOOD)
    assert r["complete"] is True
    assert r["think"] == "I hear a dog barking outside."
    assert r["answer"] == "A dog barks in a backyard."
    assert r["semantic"] == {"who": "a dog", "what": "its voice", "how": "barking", "when": "at night", "where": "a backyard"}
    assert r["extra"] == "" and r["issues"] == []


def test_audsem_nine_category_elements_are_keyed_by_role():
    sem = parse_semantic_elements(AUDSEM_ELEMENTS)
    assert sem["who"] == "- Excited dog (barking)"
    assert sem["what"] == "- Metal gate"
    assert sem["how"] == "- Barking, gate creaking"
    assert sem["when"] == "- Evening"
    assert sem["where"] == "- Suburban backyard"
    assert sem["materials"] == "- Wooden fence"
    # the parenthetical mentions "source" but must not route the heading to "what"
    assert sem["signal"] == "- Sharp bursts"
    assert sem["sensation"] == "- Loud, repeated"
    assert sem["subjective"] == "- Agitated"


@pytest.mark.parametrize(
    "line,key,value",
    [
        ("- Who: a man", "who", "a man"),
        ("* WHAT : a door", "what", "a door"),
        ("**How**: slamming", "how", "slamming"),
        ("2) when: morning", "when", "morning"),
        ("Where:  kitchen ", "where", "kitchen"),
    ],
)
def test_short_role_headings_in_many_styles(line, key, value):
    assert parse_semantic_elements(line) == {key: value}


def test_semantic_multiline_values_and_unknown_lines():
    text = "Some preamble\nwho:\n- a woman\n- a child (laughing)\nDogs: none here\nwhere: park"
    # "Dogs:" is not a role heading, so it is content of "who"; the preamble is dropped
    assert parse_semantic_elements(text) == {"who": "- a woman\n- a child (laughing)\nDogs: none here", "where": "park"}
    assert parse_semantic_elements("no headings at all") == {}
    assert parse_semantic_elements("") == {}


def test_missing_sections():
    r = parse_structured("<think>hmm</think><answer>rain</answer>")
    assert r["semantic_elements"] is None and r["semantic"] == {}
    assert r["complete"] is False
    assert any("semantic_elements" in i and "missing" in i for i in r["issues"])
    assert r["answer"] == "rain"


def test_unclosed_answer_runs_to_end_of_text():
    text = "<think>t</think><semantic_elements>who: x</semantic_elements><answer>A car passes and"
    r = parse_structured(text)
    assert r["answer"] == "A car passes and"
    assert r["complete"] is False
    assert any("never closed" in i for i in r["issues"])
    assert answer_text(text) == "A car passes and"


def test_unclosed_section_stops_at_next_tag():
    r = parse_structured("<think>thinking on <semantic_elements>what: bell</semantic_elements><answer>A bell.</answer>")
    assert r["think"] == "thinking on"
    assert r["semantic_elements"] == "what: bell"
    assert r["answer"] == "A bell."
    assert r["complete"] is False


def test_closing_tag_without_opener():
    r = parse_structured("Reasoning first.</think>\n<semantic_elements>who: bird</semantic_elements><answer>Birds sing.</answer>")
    assert r["think"] == "Reasoning first."
    assert r["complete"] is False
    assert any("without an opening tag" in i for i in r["issues"])


def test_tag_case_blanks_and_aliases():
    text = "<THINKING>t</Thinking>< Semantic Elements >who: cat</semantic elements>\n< Answer >A cat meows.</ ANSWER >"
    r = parse_structured(text)
    assert (r["think"], r["semantic_elements"], r["answer"]) == ("t", "who: cat", "A cat meows.")
    assert r["complete"] is True
    assert r["semantic"] == {"who": "cat"}


def test_repeated_sections_last_complete_block_wins():
    text = (
        "Sure. I will put my answer in <answer> and </answer> tags.\n"
        "<think>first</think><think>second</think>"
        "<semantic_elements>who: a</semantic_elements><answer>draft</answer><answer>final</answer>"
    )
    r = parse_structured(text)
    assert r["think"] == "second"
    assert r["answer"] == "final"
    assert r["complete"] is True
    assert any("appears 2 times" in i for i in r["issues"]) and any("appears 3 times" in i for i in r["issues"])
    assert "Sure. I will put my answer in" in r["extra"]


def test_complete_block_beats_a_later_unclosed_one():
    text = GOOD + "\n<answer>A dog barks in a back"
    r = parse_structured(text)
    assert r["answer"] == "A dog barks in a backyard."
    assert r["complete"] is True
    assert any("never closed" in i for i in r["issues"])


def test_reopened_tag_restarts_the_block():
    r = parse_structured("<answer>abandoned <answer>kept</answer>")
    assert r["answer"] == "kept"
    assert any("opened again" in i for i in r["issues"])


def test_empty_and_blank_sections_are_not_complete():
    r = parse_structured("<think></think><semantic_elements>who: x</semantic_elements><answer>   \n </answer>")
    assert r["think"] == "" and r["answer"] == ""
    assert r["complete"] is False
    assert sum("is empty" in i for i in r["issues"]) == 2


def test_extra_text_outside_tags_is_kept_and_harmless():
    r = parse_structured("Here you go:\n" + GOOD + "\nHope this helps!")
    assert r["complete"] is True
    assert r["extra"] == "Here you go: Hope this helps!"


def test_nested_sections_are_garbled():
    text = "<think>a <semantic_elements>who: b</semantic_elements> c</think><answer>d</answer>"
    r = parse_structured(text)
    assert r["semantic_elements"] == "who: b"
    assert r["answer"] == "d"
    assert "<semantic_elements>" not in r["think"] and r["think"].startswith("a")
    assert r["complete"] is False
    assert any("nested" in i for i in r["issues"])


def test_interleaved_sections_are_garbled():
    r = parse_structured("<think>a<answer>b</think>c</answer><semantic_elements>who: d</semantic_elements>")
    assert r["complete"] is False
    assert any("nested or interleaved" in i for i in r["issues"])


def test_broken_tags_are_plain_text():
    r = parse_structured("<answer A dog.</answer")
    assert r["answer"] is None
    assert r["extra"] == "<answer A dog.</answer"
    assert answer_text("<answer A dog.</answer") == "<answer A dog.</answer"


def test_unicode_and_multiline_content():
    text = "<think>Ça sonne… 犬?</think>\n<semantic_elements>\nwho:\n  犬\n</semantic_elements>\n<answer>\n Un chien aboie.\n</answer>"
    r = parse_structured(text)
    assert r["complete"] is True
    assert r["think"] == "Ça sonne… 犬?" and r["answer"] == "Un chien aboie." and r["semantic"] == {"who": "犬"}


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError):
        parse_structured(None)


def test_answer_text_fallbacks():
    assert answer_text(GOOD) == "A dog barks in a backyard."
    assert answer_text("  A plain   caption\nwith no tags. ") == "A plain caption with no tags."
    # structured output cut off before its answer: nothing outside the sections -> ""
    assert answer_text("<think>only thinking</think><semantic_elements>who: x</semantic_elements>") == ""
    assert answer_text("<answer></answer>") == ""


def test_compliance_rate():
    texts = [GOOD, "plain caption", GOOD.replace("</answer>", ""), GOOD.upper()]
    assert compliance_rate(texts) == pytest.approx(0.5)
    assert compliance_rate(t for t in [GOOD]) == 1.0
    assert compliance_rate(["nothing"]) == 0.0
    with pytest.raises(ValueError):
        compliance_rate([])


def test_instruction_templates():
    assert build_instruction(None) == CAPTION_INSTRUCTION
    assert build_instruction("What is it?") == CAPTION_INSTRUCTION + " Question: What is it?"
    assert build_instruction(" What is it? ", "qa") == QA_INSTRUCTION + "What is it?"
    assert build_instruction("What is it?", "raw") == "What is it?"
    for tag in ("<think>", "</think>", "<semantic_elements>", "</semantic_elements>", "<answer>", "</answer>"):
        assert tag in CAPTION_INSTRUCTION and tag in QA_INSTRUCTION
    assert structured_instruction("Why?") == QA_INSTRUCTION + "Why?"
    assert structured_instruction("") == CAPTION_INSTRUCTION
    with pytest.raises(ValueError):
        build_instruction("", "qa")
    with pytest.raises(ValueError):
        build_instruction("x", "bogus")


def test_two_section_variant_of_the_grpo_model():
    from fusionaudio.structured import compliance_rate, parse_structured

    two = "<think>a dog outside</think>\n<answer>a dog barks</answer>"
    p = parse_structured(two, variant="two")
    assert p["complete"] and p["think"] == "a dog outside" and p["answer"] == "a dog barks"
    assert p["semantic_elements"] is None and not any("semantic" in i for i in p["issues"])
    assert not parse_structured(two)["complete"]  # the three-section format needs <semantic_elements>
    assert not parse_structured("<think>x</think><answer></answer>", variant="two")["complete"]
    assert not parse_structured("<answer>only</answer>", variant="two")["complete"]
    assert compliance_rate([two, "<think>x</think>", "<think>a</think><answer>b</answer>"], variant="two") == 2 / 3
    with pytest.raises(ValueError, match="unknown structured variant"):
        parse_structured(two, variant="four")


def test_strict_format_is_the_upstream_check():
    from fusionaudio.structured import strict_format

    assert strict_format("<think>a</think>\n<answer>b</answer>", "two")
    assert strict_format("<think>a</think> <semantic_elements>s</semantic_elements>\n<answer>b</answer>")
    assert not strict_format("Sure! <think>a</think><answer>b</answer>", "two")  # text before the blocks
    assert not strict_format("<think>a</think><answer>b</answer> done", "two")  # text after
    assert not strict_format("<THINK>a</THINK><answer>b</answer>", "two")  # upstream tags are lower-case
    assert not strict_format("<think>a</think><answer>b</answer>")  # three sections expected


def test_sft_validation_accepts_the_two_section_variant(tmp_path):
    import json

    import numpy as np
    import soundfile as sf

    from fusionaudio.audsem.train import RecordError, load_records

    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    row = {"audio_id": "a.wav", "instruction": "What is it?", "output": "<think>quiet</think>\n<answer>silence</answer>"}
    (tmp_path / "d.json").write_text(json.dumps([row]))
    (rec,) = load_records(tmp_path / "d.json", structured_variant="two")
    assert rec.output.endswith("<answer>silence</answer>")
    with pytest.raises(RecordError, match="not in the <think>/<semantic_elements>/<answer> format"):
        load_records(tmp_path / "d.json")
