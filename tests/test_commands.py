"""The one error guard / exit-code rule, and --help of every command (no pager, every flag with a default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionaudio.commands import function_parser, run_command
from fusionaudio.errors import CheckpointError, RunError, UsageError

REPO = Path(__file__).resolve().parents[1]


def _raise(exc):
    def fn():
        raise exc
    return fn


@pytest.mark.parametrize("exc, code", [(UsageError("bad flag"), 2), (CheckpointError("x.json: bad"), 2),
                                       (FileNotFoundError("model not found: d"), 2), (RunError("2 of 3 failed"), 1),
                                       (RuntimeError("boom"), 1), (KeyboardInterrupt(), 130)])
def test_exit_codes_and_one_line(exc, code, capsys, monkeypatch):
    monkeypatch.delenv("FUSIONAUDIO_DEBUG", raising=False)
    assert run_command(_raise(exc)) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_multi_line_messages_stay_one_line_and_keep_their_content(capsys):
    assert run_command(_raise(UsageError("data.json: 2 bad records:\n  record 1: x\n  record 2: y"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "record 1: x" in err and "record 2: y" in err


def test_debug_switch_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("FUSIONAUDIO_DEBUG", "1")
    with pytest.raises(UsageError):
        run_command(_raise(UsageError("bad")))


def test_return_values_become_the_exit_code():
    assert run_command(lambda: 1) == 1 and run_command(lambda: None) == 0 and run_command(lambda: {"a": 1}) == 0


def test_function_parser_takes_flags_defaults_and_docstring_help():
    def evaluate(input: str, top_k: int = 5, threshold: float = 0.5, strict: bool = False, keys=("a", "b")):
        """Score things.

        Args:
            input: the records file.
            top_k: how many to keep.
        """
    parser = function_parser(evaluate, prog="x")
    args = parser.parse_args(["--input", "r.json", "--top_k", "3", "--strict", "--keys", "[1, 2]"])
    assert (args.input, args.top_k, args.threshold, args.strict, args.keys) == ("r.json", 3, 0.5, True, [1, 2])
    assert parser.parse_args(["--input", "r", "--strict", "false"]).strict is False
    text = parser.format_help()
    assert "the records file" in text and "how many to keep" in text and "(default: 5)" in text
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --input is required


COMMANDS = [["quick_inference.py"], ["-m", "fusionaudio.cli", "infer"], ["-m", "fusionaudio.cli", "train"],
            ["-m", "fusionaudio.cli", "export"], ["-m", "fusionaudio.retrieval", "train"],
            ["-m", "fusionaudio.evaluate.qa", "mcq"], ["-m", "fusionaudio.evaluate.classification"],
            ["-m", "fusionaudio.audsem.train"], ["-m", "fusionaudio.audsem.grpo"], ["-m", "fusionaudio.cli", "serve"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[-2:]))
def test_every_help_prints_without_a_pager_and_lists_defaults(cmd):
    env = {**os.environ, "PAGER": "false", "TERM": "xterm"}
    r = subprocess.run([sys.executable, *cmd, "--help"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and "default" in r.stdout and "--" in r.stdout


def test_quick_inference_help_does_not_import_torch():
    code = ("import runpy, sys; sys.argv = ['quick_inference.py', '--help']\n"
            "try:\n    runpy.run_path('quick_inference.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("NO-TORCH"), r.stdout[-300:] + r.stderr[-300:]


def test_command_table_lists_every_command_and_refuses_unknown_ones():
    r = subprocess.run([sys.executable, "-m", "fusionaudio.cli", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and all(c in r.stdout for c in ("quick", "infer", "train", "serve", "evaluate"))
    r = subprocess.run([sys.executable, "-m", "fusionaudio.cli", "nope"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown command 'nope'")


def _parsers():
    from fusionaudio.cli import _export_parser
    from fusionaudio.commands import dataclass_parser
    from fusionaudio.evaluate import captioning, classification
    from fusionaudio.infer.cli import build_merge_parser, build_parser
    from fusionaudio.infer.quick import quick_inference_parser
    from fusionaudio.serve.cli import demo_parser, serve_parser
    from fusionaudio.train.args import TrainArgs

    return {"quick": quick_inference_parser(), "infer": build_parser(), "infer merge": build_merge_parser(),
            "train": dataclass_parser(TrainArgs, prog="t"), "serve": serve_parser(), "demo": demo_parser(),
            "export": _export_parser(True), "captioning": function_parser(captioning.evaluate_captioning),
            "classification": function_parser(classification.evaluate_classification)}


def test_every_flag_has_help_text():
    missing = [f"{name}: {'/'.join(a.option_strings)}" for name, parser in _parsers().items()
               for a in parser._actions if a.option_strings and a.help != "==SUPPRESS==" and not (a.help or "").strip()]
    assert not missing, missing
