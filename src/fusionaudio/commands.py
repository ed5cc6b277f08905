"""What every command shares: one error guard, one exit-code rule, and parsers built from signatures.

Exit codes, for every ``fusionaudio`` command and ``python -m fusionaudio.<package>``:

* 0 -- the run did what was asked;
* 1 -- the run started and failed (some inputs failed, a non-finite loss, a stage that errored);
* 2 -- bad input: a flag, a file, a record, a model directory (nothing useful was done);
* 130 -- interrupted.

A failure prints one line, ``error: <what> (<file/record>)``, on stderr. ``FUSIONAUDIO_DEBUG=1`` in the
environment shows the traceback instead (the one switch, for every command).

:func:`function_parser` builds an argparse parser from a function's signature and the ``Args:`` section of
its docstring (every flag listed with its default and help, printed without a pager) and
:func:`dataclass_parser` does the same from an options dataclass.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import sys
import typing

from fusionaudio.errors import CheckpointError, InputError, RunError, UsageError

DEBUG_ENV = "FUSIONAUDIO_DEBUG"
#: Exceptions that mean "the input was bad" (exit 2); anything else that escapes a run is exit 1.
BAD_INPUT = (UsageError, InputError, CheckpointError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError, ValueError, TypeError, KeyError, LookupError)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_line(exc: BaseException) -> str:
    """``error: <message>``, one line; the type is named when the message alone would not say what failed."""
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, (UsageError, InputError, CheckpointError, RunError)) and type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    notes = " ".join(getattr(exc, "__notes__", []))
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip()).replace(":;", ":")
    return f"error: {line[:2000]}" + (f" ({notes})" if notes else "")


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, RunError):
        return 1
    return 2 if isinstance(exc, BAD_INPUT) else 1


def run_command(fn: typing.Callable[[], object]) -> int:
    """Run ``fn`` under the one error guard; returns the exit code (``fn`` may return one itself)."""
    try:
        result = fn()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if debug_enabled():
            raise
        print(error_line(exc), file=sys.stderr)
        return exit_code(exc)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ------------------------------------------------------------------------------------------ parsers
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every flag's help; no pager, ever (argparse prints to stdout)."""


def parse_bool(text) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case)."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_literal(text):
    """A list / tuple / dict / number / None written as Python or JSON (``"[1, 2]"``, ``a,b``); else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if "," in text:
            return [t.strip() for t in text.split(",") if t.strip()]
        return text


def docstring_args(doc: str | None) -> dict[str, str]:
    """``name: text`` entries of a docstring's ``Args:`` section (continuation lines joined)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() in ("Args:", "Arguments:", "Options:"))
    except StopIteration:
        return out
    current = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if not line.startswith(" "):
            break
        m = re.match(r"^\s{2,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if m and (current is None or len(line) - len(line.lstrip()) <= 8):
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current:
            out[current] += " " + line.strip()
    return out


def _add_option(parser, name: str, default, annotation, help_text: str, required: bool) -> None:
    flag = f"--{name}"
    kind = annotation if isinstance(annotation, type) else None
    text = help_text or name.replace("_", " ")
    if isinstance(default, bool) or kind is bool or annotation in ("bool", "bool | None"):
        parser.add_argument(flag, type=parse_bool, nargs="?", const=True, default=default, help=text,
                            metavar="BOOL")
        return
    if isinstance(default, int) and not isinstance(default, bool) or kind is int or annotation in ("int",):
        typ = int
    elif isinstance(default, float) or kind is float or annotation in ("float",):
        typ = float
    elif isinstance(default, (list, tuple, dict)) or (isinstance(annotation, str) and
                                                       re.search(r"list|tuple|dict|Sequence", annotation)):
        typ = parse_literal
    elif default is None and isinstance(annotation, str) and re.search(r"\b(int|float)\b", annotation):
        typ = parse_literal
    else:
        typ = str
    parser.add_argument(flag, type=typ, default=None if required else default, required=required, help=text)


def function_parser(fn, prog: str | None = None, parser: argparse.ArgumentParser | None = None,
                    skip: tuple[str, ...] = ("self",), doc: str | None = None) -> argparse.ArgumentParser:
    """A parser whose flags are ``fn``'s keyword parameters (``--name``), help from its docstring (or ``doc``)."""
    doc = doc or inspect.getdoc(fn) or ""
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0] or None,
                                         formatter_class=HelpFormatter)
    helps = docstring_args(doc)
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind == param.VAR_KEYWORD:
            continue
        if param.kind == param.VAR_POSITIONAL:
            parser.add_argument(name, nargs="*", help=helps.get(name, name.replace("_", " ")))
            continue
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        _add_option(parser, name, default, param.annotation, helps.get(name, ""), required)
    return parser


def subcommand_parser(commands: dict, prog: str, description: str | None = None, common=None,
                      common_doc: str | None = None) -> argparse.ArgumentParser:
    """``prog <command> --flags``: one sub-parser per function of ``commands``; ``common``'s parameters
    (e.g. a class's ``__init__``) are flags of every sub-command too."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="_command", required=True, metavar="{" + ",".join(commands) + "}")
    for name, fn in commands.items():
        doc = inspect.getdoc(fn) or ""
        sp = function_parser(fn, parser=sub.add_parser(name, help=doc.split("\n")[0],
                                                       description=doc.split("\n\n")[0], formatter_class=HelpFormatter))
        if common is not None:
            function_parser(common, parser=sp, doc=common_doc)
    return parser


def call_parsed(fn, args: argparse.Namespace):
    params = inspect.signature(fn).parameters
    values = vars(args)
    positional = [v for n, p in params.items() if p.kind == p.VAR_POSITIONAL for v in values.get(n) or ()]
    return fn(*positional, **{k: v for k, v in values.items()
                              if k in params and params[k].kind != params[k].VAR_POSITIONAL})


def dataclass_parser(cls, prog: str, description: str | None = None,
                     parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """A parser with one ``--flag`` per field of the options dataclass ``cls`` (help from ``metadata['help']``)."""
    parser = parser or argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        annotation = hints.get(f.name)
        name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation)
        _add_option(parser, f.name, default, annotation if isinstance(annotation, type) else name,
                    f.metadata.get("help", ""), required)
    return parser


def print_result(result) -> None:
    """Print what a command function returned (a dict or list as JSON, anything else as text)."""
    import json

    if result is None:
        return
    if isinstance(result, (dict, list)):
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        print(result)


def function_main(fn, prog: str, argv=None, show=print_result, description: str | None = None) -> int:
    """``main()`` of a command that is one function: flags from its signature, the one error guard."""
    parser = function_parser(fn, prog=prog)
    if description:
        parser.description = description
    args = parser.parse_args(argv)
    return run_command(lambda: show(call_parsed(fn, args)))


def subcommands_main(commands: dict, prog: str, argv=None, show=print_result, description: str | None = None) -> int:
    """``main()`` of ``prog <command> --flags`` over the functions of ``commands``."""
    parser = subcommand_parser(commands, prog, description)
    args = parser.parse_args(argv)
    fn = commands[args._command]
    return run_command(lambda: show(call_parsed(fn, args)))
