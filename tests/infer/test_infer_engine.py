"""``--engine`` on the command lines, without vLLM: what is refused, and how (the engine itself is tested in
tests/engine_vllm/, in the second venv that ``make vllm-env`` builds)."""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace

import pytest

from fusionaudio import infer
from fusionaudio.errors import UsageError
from fusionaudio.gama.vllm_options import check_engine, refuse_unsupported
from fusionaudio.infer.runners import run_settings

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture
def records(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"audio_id": "empty", "instruction": "Name a bird.", "output": "robin"}]))
    return path


def run_infer(records, tmp_path, *flags):
    return infer.main(["--json_input", str(records), "--json_output", str(tmp_path / "out.json"), "--device", "cpu",
                       "--no_progress", *flags])


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_engine_vllm_without_vllm_says_how_to_install(records, tmp_path, capsys):
    assert run_infer(records, tmp_path, "--engine", "vllm") == 2
    (line,) = error_lines(capsys)
    assert "needs vLLM" in line and "make vllm-env" in line and "pip install 'fusionaudio[vllm]'" in line
    assert not (tmp_path / "out.json").exists()


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_serve_engine_vllm_without_vllm_says_how_to_install(capsys):
    from fusionaudio.serve.cli import serve_main

    assert serve_main(["--engine", "vllm", "--port", "1"]) == 2
    (line,) = error_lines(capsys)
    assert "needs vLLM" in line and "make vllm-env" in line


@pytest.mark.parametrize("flags, needle", [
    (["--num_beams", "2"], "num_beams=2 (beam search) is not available with --engine vllm"),
    (["--repetition_penalty", "1.1"], "repetition_penalty is not available with --engine vllm"),
    (["--num_workers", "2"], "one `--shard R/W` per GPU"),
])
def test_what_vllm_cannot_do_is_refused_by_name_before_loading(records, tmp_path, capsys, flags, needle):
    assert run_infer(records, tmp_path, "--engine", "vllm", *flags) == 2
    (line,) = error_lines(capsys)
    assert needle in line


def test_vllm_args_need_the_vllm_engine_and_a_json_object(records, tmp_path, capsys):
    assert run_infer(records, tmp_path, "--vllm_args", '{"max_num_seqs": 4}') == 2
    assert "--vllm_args and --vllm_lora apply to --engine vllm only" in error_lines(capsys)[0]
    assert run_infer(records, tmp_path, "--vllm_lora", "adapter") == 2
    with pytest.raises(SystemExit) as exc:
        run_infer(records, tmp_path, "--engine", "vllm", "--vllm_args", "[1, 2]")
    assert exc.value.code == 2 and "expected a JSON object" in capsys.readouterr().err


def test_engine_names_and_families():
    check_engine("hf", "audsemthinker")
    check_engine("vllm", "gama")
    with pytest.raises(UsageError, match="audsemthinker runs with --engine hf"):
        check_engine("vllm", "audsemthinker")
    with pytest.raises(UsageError, match="unknown engine 'tgi'"):
        check_engine("tgi", "gama")
    refuse_unsupported({"do_sample": False, "max_new_tokens": 8, "num_beams": 1, "repetition_penalty": 1.0})


def test_run_settings_record_only_a_non_default_engine():
    from fusionaudio.infer.cli import build_parser

    base = ["--json_input", "in.json", "--json_output", "out.json", "--arch", "gama"]
    hf = run_settings(build_parser().parse_args(base))
    vllm = run_settings(build_parser().parse_args(base + ["--engine", "vllm"]))
    assert "engine" not in hf  # work dirs written before --engine existed still resume
    assert vllm == {**hf, "engine": "vllm", "vllm_lora": "merge"}
    assert run_settings(Namespace(**{**vars(build_parser().parse_args(base)), "engine": "hf"})) == hf
