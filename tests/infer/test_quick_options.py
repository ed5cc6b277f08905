"""quick_inference as a newcomer runs it: a fine-tuned checkpoint with no --base_model, and --structured
(parse only) apart from --structured_prompt (ask for the sections; the JSON shows the question sent)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fusionaudio.infer.quick import quick_inference_main
from fusionaudio.structured import structured_instruction

COMMON = ["--question", "Describe the audio.", "--device", "cpu", "--greedy", "--max_tokens", "4", "--json"]


@pytest.fixture(scope="module")
def checkpoint(tiny_base_dir, tmp_path_factory):
    from fusionaudio.gama.loading import load_model
    from fusionaudio.train.checkpoints import save_trained

    model, _ = load_model(tiny_base_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3)
    out = tmp_path_factory.mktemp("runs_ft") / "checkpoint-4"
    save_trained(model, [n for n, _ in model.named_parameters() if ".lora_" in n], out,
                 {"base_dir": str(tiny_base_dir.resolve())})
    return out


def _run(capsys, *argv) -> tuple[int, list[dict] | None, str]:
    capsys.readouterr()
    rc = quick_inference_main([*map(str, argv)])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if rc == 0 else None, err


def test_model_path_alone_uses_the_base_recorded_by_training(checkpoint, tiny_base_dir, audio_files, capsys):
    rc, alone, err = _run(capsys, "--model_path", checkpoint, "--audio", audio_files[0], *COMMON)
    assert rc == 0, err
    rc, explicit, err = _run(capsys, "--base_model", tiny_base_dir, "--model_path", checkpoint, "--audio",
                             audio_files[0], *COMMON)
    assert rc == 0, err
    assert alone[0]["response"] == explicit[0]["response"]
    rc, as_base, err = _run(capsys, "--base_model", checkpoint, "--audio", audio_files[0], *COMMON)
    assert rc == 0 and as_base[0]["response"] == alone[0]["response"], err


def test_model_path_without_a_recorded_base_says_what_to_pass(checkpoint, audio_files, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    (bare / "training_args.json").unlink()
    rc, _, err = _run(capsys, "--model_path", bare, "--audio", audio_files[0], *COMMON)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "pass --base_model DIR" in lines[0] and str(bare) in lines[0], err


def test_structured_parses_and_structured_prompt_asks(tiny_base_dir, audio_files, capsys):
    rc, parsed, err = _run(capsys, "--base_model", tiny_base_dir, "--audio", audio_files[0], *COMMON, "--structured")
    assert rc == 0, err
    assert parsed[0]["question"] == "Describe the audio."  # the prompt is not rewritten
    assert set(parsed[0]["structured"]) >= {"think", "answer", "complete"}
    rc, asked, err = _run(capsys, "--base_model", tiny_base_dir, "--audio", audio_files[0], *COMMON,
                          "--structured", "--structured_prompt")
    assert rc == 0, err
    assert asked[0]["question"] == structured_instruction("Describe the audio.") != "Describe the audio."
