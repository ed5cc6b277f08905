"""Decoding: read an audio file into a float32 ``[channels, samples]`` tensor, and check inputs.

:class:`AudioError` names the file and the problem; :func:`header_problem` checks a file's header only
(cheap, before a model loads); :func:`expand_audio_args` turns command-line paths and folders into files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fusionaudio.errors import InputError, UsageError

PathLike = str | Path
TEXT_ONLY_HINT = "for a text-only question leave out --audio"

#: File suffixes a folder expands to (what libsndfile / soundfile decodes).
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".aifc", ".au", ".snd",
                  ".caf", ".w64", ".rf64"}


class AudioError(InputError):
    """Bad or unusable audio. The message names the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # keep `path` when pickled across DataLoader workers
        return (type(self), (self.problem, self.path))


def _check_readable(path: Path) -> None:
    """An :class:`AudioError` that says why ``path`` cannot be opened as a regular file."""
    if "\0" in str(path):
        raise AudioError("path contains a NUL byte", repr(str(path)))
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError("symlink loop (too many levels of symbolic links)", path) from exc
        if exc.errno == errno.ENOENT:
            problem = "broken symlink (its target does not exist)" if path.is_symlink() else "file not found"
            raise AudioError(problem, path) from exc
        raise AudioError(f"cannot open ({exc.strerror or exc})", path) from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise AudioError(f"not an audio file: {kind}" if kind == "a directory" else kind, path)
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied", path)


def read_audio(path: PathLike) -> tuple[torch.Tensor, int]:
    """Decode a file with soundfile (wav, flac, ogg, mp3, ...).

    Returns ``(waveform, sample_rate)`` with ``waveform`` a float32 tensor ``[channels, samples]``
    in [-1, 1] (integer PCM scaled by 1/32768 as libsndfile does). Raises :class:`AudioError` for a
    missing or undecodable file.
    """
    path = Path(path)
    _check_readable(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise AudioError(f"cannot decode audio ({exc})", path) from exc
    except MemoryError as exc:
        raise AudioError(f"cannot decode audio: out of memory ({exc})", path) from exc
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def expand_audio_args(items: list[str] | None, recursive: bool = False, skipped: list[str] | None = None
                      ) -> list[str | None]:
    """Paths as given (an existing path is always audio, whatever its name); a folder expands to its
    audio files (sorted; with ``recursive`` its subfolders' too). No ``items`` -> ``[None]`` (text
    only); an empty argument is an error. What a folder held but was not taken (other files,
    subfolders without ``recursive``) is appended to ``skipped``."""
    if not items:
        return [None]
    out: list[str | None] = []
    for item in items:
        if not str(item).strip():
            raise UsageError(f"--audio got an empty argument ({TEXT_ONLY_HINT})")
        p = Path(item)
        if not p.is_dir():
            out.append(str(item))
            continue
        found, passed = [], []
        for f in sorted(p.rglob("*") if recursive else p.iterdir()):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                found.append(str(f))
            elif not (recursive and f.is_dir()):
                passed.append(str(f) + ("/" if f.is_dir() else ""))
        if not found:
            raise UsageError(f"{p}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
                             + ("" if recursive else "; --recursive also searches its subfolders"))
        out += found
        if skipped is not None:
            skipped += passed
    return out


def header_problem(path: str) -> str | None:
    """None if ``path`` looks like a readable audio file (header only), else the problem, naming it."""
    import os

    import soundfile as sf

    try:
        st = os.stat(path)
    except OSError as exc:
        hint = f" ({TEXT_ONLY_HINT})" if path in ("empty", "none", "None") else ""
        return f"{path}: {'file not found' if exc.errno == 2 else exc.strerror}{hint}"
    import stat

    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types
        return f"{path}: cannot decode audio ({exc})"
    if info.frames <= 0:
        return f"{path}: audio is empty (no samples)"
    return None
