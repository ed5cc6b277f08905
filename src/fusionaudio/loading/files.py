"""Files of a model directory, read safely: every error names the file and the problem.

A model directory is untrusted input: JSON is parsed (never unpickled or executed), configs that point at
Python code are refused, and a file that is not a regular file (a loop, a dangling link) says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusionaudio.errors import CheckpointError


def listing(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- files -------------------------------------------------------------------------------
def check_path(path: Path, what: str = "file") -> Path:
    """``path`` must be an existing regular file; a symlink loop or a dangling link says so."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as exc:  # RuntimeError: symlink loop (Python < 3.13)
            loop = "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40
            raise CheckpointError(f"{path}: {'symlink loop' if loop else 'dangling symlink'} ({exc})") from exc
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} is not a regular file")
    return path


def read_json_file(path: Path, what: str = "config") -> dict:
    """A JSON object from ``path``; every failure names the file and the problem."""
    check_path(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read {what}: {type(exc).__name__}: {exc}") from exc
    if not text.strip():
        raise CheckpointError(f"{path}: empty {what} file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: malformed JSON in {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold one object; errors name the file and the problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def refuse_remote_code(config: dict, path: Path) -> None:
    """Directories whose config points at Python code beside it are refused (never executed)."""
    if "auto_map" in config:
        raise CheckpointError(
            f"{path}: has an 'auto_map' entry ({config['auto_map']!r}), i.e. custom Python code; "
            "this project never runs code from a model directory (trust_remote_code=False)")
