"""Run ``fusionaudio serve`` / ``fusionaudio demo`` in a subprocess on a free 127.0.0.1 port (tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess("serve", [...]) as url:`` starts the command and waits until ``ready_path`` answers 200."""

    def __init__(self, command: str, args: list[str] = (), port: int | None = None, ready_path: str = "/health",
                 timeout: float = 180.0):
        self.command, self.args, self.port = command, list(args), port or free_port()
        self.ready_path, self.timeout, self.proc = ready_path, timeout, None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
        env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        self.proc = subprocess.Popen([sys.executable, "-m", "fusionaudio.cli", self.command, "--port", str(self.port),
                                      *self.args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fusionaudio {self.command} exited early:\n{self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"fusionaudio {self.command} did not answer on {self.url} within {self.timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
