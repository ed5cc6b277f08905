#!/usr/bin/env python3
"""Run the README's short commands as written: every ```bash block right after a ``<!-- readme-check -->``
line, one command a line (``\\`` continues a line), in the project's ``.venv`` as if activated.

The commands run in a scratch folder that links to the checkout's files, so what they write (``runs/``,
``fresh/``) lands there, not in the checkout. ``make readme-check`` runs this; CI runs it after the tests.

    python scripts/ci/readme_check.py [--readme README.md] [--list] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- readme-check -->"
TIMEOUT_S = 1200


def marked_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks that follow a ``MARK`` line (comments and blank lines dropped)."""
    commands = []
    for m in re.finditer(re.escape(MARK) + r"\s*\n```(?:bash|sh)\n(.*?)\n```", text, re.DOTALL):
        block = re.sub(r"\s*\\\n\s*", " ", m.group(1))
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def scratch_folder(keep: bool) -> Path:
    """A folder whose entries link to the checkout's top-level files and folders (not .git, runs, .venv)."""
    folder = Path(tempfile.mkdtemp(prefix="readme_check."))
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv", "runs", "fresh", ".pytest_cache"):
            (folder / entry.name).symlink_to(entry)
    if not keep:
        import atexit

        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--list", action="store_true", help="print the commands and run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = ap.parse_args(argv)
    commands = marked_commands(Path(args.readme).read_text(encoding="utf-8"))
    if not commands:
        print(f"error: {args.readme}: no command after a {MARK} line", file=sys.stderr)
        return 1
    if args.list:
        print("\n".join(commands))
        return 0
    venv = ROOT / ".venv"
    if not (venv / "bin" / "python").is_file():
        print(f"error: {venv} not found: run `make demo` first (the README's own first step)", file=sys.stderr)
        return 1
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    folder = scratch_folder(args.keep)
    print(f"readme-check: {len(commands)} commands in {folder}", flush=True)
    for k, command in enumerate(commands, 1):
        print(f"readme-check [{k}/{len(commands)}] $ {command}", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"error: README command timed out after {TIMEOUT_S} s: {command}", file=sys.stderr)
            return 1
        if proc.returncode != 0:
            print(f"error: README command failed (exit {proc.returncode}): {command}", file=sys.stderr)
            return 1
        print(f"readme-check [{k}/{len(commands)}] ok in {time.monotonic() - t0:.0f} s", flush=True)
    print(f"readme-check: all {len(commands)} README commands ran as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
