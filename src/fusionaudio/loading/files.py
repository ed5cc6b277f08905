"""Files of a model directory, read safely: every error names the file and the problem.

A model directory is untrusted input: JSON is parsed (never unpickled or executed), configs that point at
Python code are refused, and a file that is not a regular file (a loop, a dangling link, a device, a
``/proc`` or ``/sys`` file) says so. Every file name a directory gives (a shard index's ``weight_map``, a
tokenizer config's ``*_file`` entries) goes through :func:`inside`: a name that would leave the directory
(``..``, an absolute path) is refused by name, before anything is opened or stat'ed, so the error never
tells whether such a file exists. Symlinks inside the directory may point anywhere (Hugging Face caches
are made of them); only their target's kind is checked when they are opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from fusionaudio.errors import CheckpointError


def listing(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- names ------------------------------------------------------------------------------
#: Pseudo file systems whose files look regular but are not model data (``/proc/self/environ``). Devices
#: (``/dev/zero``) are not regular files anyway; regular files under ``/dev/shm`` (a RAM disk) are fine.
SPECIAL_ROOTS = ("/proc", "/sys")


def inside(directory, name, what: str = "file", source=None) -> Path:
    """``directory / name``, where ``name`` is a file name a model directory gave (in ``source``, e.g. its
    shard index). Refused by name, with nothing opened or stat'ed: a name that is not a non-empty string,
    holds a NUL byte, is absolute (``/etc/passwd``, ``C:\\x``, ``\\\\server\\x``) or has a ``..`` part."""
    where = f"{source}: " if source is not None else f"{directory}: "
    if not isinstance(name, str) or not name.strip():
        raise CheckpointError(f"{where}{what} name must be a non-empty string, got {name!r}")
    problem = None
    if "\0" in name:
        problem = "holds a NUL byte"
    elif PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        problem = "is an absolute path"
    elif ".." in name.replace("\\", "/").split("/"):
        problem = "has a '..' part"
    if problem:
        raise CheckpointError(f"{where}{what} name {name!r} {problem}: a model directory may only name files "
                              f"inside itself ({directory}); refused without opening it")
    return Path(directory) / name


def check_named_files(config: dict, directory, source, what: str = "file") -> None:
    """Every file name in ``config``'s ``*_file`` / ``*_files`` entries (strings, lists or objects of
    strings, as tokenizer and processor configs hold them) must stay inside ``directory``."""
    for key, value in config.items():
        if not (isinstance(key, str) and (key.endswith("_file") or key.endswith("_files"))) or value is None:
            continue
        names = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for name in names:
            inside(directory, name, f"{what} ({key})", source)


# -- files -------------------------------------------------------------------------------
def check_path(path: Path, what: str = "file") -> Path:
    """``path`` must be an existing regular file; a symlink loop, a dangling link, a device or a file
    of ``/proc`` / ``/sys`` (reached through a symlink) says so."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as exc:  # RuntimeError: symlink loop (Python < 3.13)
            loop = "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40
            raise CheckpointError(f"{path}: {'symlink loop' if loop else 'dangling symlink'} ({exc})") from exc
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    real = os.path.realpath(path)
    if not path.is_file() or any(real == root or real.startswith(root + os.sep) for root in SPECIAL_ROOTS):
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
