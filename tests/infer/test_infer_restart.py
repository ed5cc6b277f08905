"""Restarting ``fusionaudio.infer`` as users do: right after a kill -9 (the loader workers die with the run
and never hold its locks), after an attempt that finished nothing (its settings do not bind), and with
``--temperature 0`` (greedy, as everywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from fusionaudio import infer
from fusionaudio.infer import journal

TEXT = ["--max_new_tokens", "3", "--device", "cpu", "--no_progress", "--loader_workers", "0"]

# A stand-in for a run: it takes the run lock and a shard lock, starts two loader workers that are busy
# decoding (a minute per clip), waits until both have started (a forked worker holds copies of the run's
# files until its init closes them: if it never did, this waits a minute and the restart below is refused),
# prints their pids and waits to be killed.
PARENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from fusionaudio.infer import journal, loader
    from fusionaudio.infer.records import Item

    def slow(path):
        if path.name == "first.wav":
            return loader.Prepared()
        time.sleep(60)
        return loader.Prepared()

    work = Path(sys.argv[1])
    lock = journal.RunLock(work, exclusive=True, what="the killed run")
    writer = journal.ShardWriter(work, 0)
    batches = [[Item(k, str(k), {}, Path("first.wav" if k == 0 else f"{k}.wav"))] for k in range(6)]
    stream = loader.iterate(batches, slow, workers=2, prefetch=1)
    next(stream)
    def parent_of(d):
        try:
            return (d / "stat").read_text().split(")")[-1].split()[1]
        except OSError:
            return None

    def holds_locks(pid):  # a worker holds the run's files from its fork until its init closes them
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            return False
        targets = set()
        for fd in fds:
            try:
                targets.add(os.readlink(fd))
            except OSError:
                pass
        return bool(targets & {str(lock.path), str(writer.path)})

    kids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and parent_of(d) == str(os.getpid())]
    deadline = time.monotonic() + 60
    while any(holds_locks(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.02)
    print(" ".join(map(str, kids)), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_9_leaves_no_worker_and_no_lock(tmp_path):
    work = tmp_path / "preds.json.parts"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(work)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        proc.kill()
        proc.wait()
    # the restart's locks are free at once: the workers never held the run's files
    journal.RunLock(work, exclusive=True, what="the restart").close()
    journal.ShardWriter(work, 0).close()
    deadline = time.monotonic() + 10  # the kernel delivers the parent-death signal right away
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "loader workers outlived the killed run"


def _records(tmp_path):
    records = [{"audio_id": "empty", "instruction": f"Question {k}?", "output": str(k)} for k in range(3)]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_settings_bind_only_once_a_record_is_finished(tmp_path, tiny_base_dir, caplog, capsys):
    path, out = _records(tmp_path), tmp_path / "preds.json"
    work = infer.default_work_dir(out)
    work.mkdir()
    # an attempt that stopped before its first record (a model that failed to load, a kill while loading)
    (work / journal.CONFIG_NAME).write_text(json.dumps({"settings": {"arch": "gama", "seed": 123}}))
    argv = ["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir), *TEXT]
    assert infer.main(argv + ["--temperature", "0"]) == 0, caplog.text + capsys.readouterr().err
    settings = json.loads((work / journal.CONFIG_NAME).read_text())["settings"]
    assert settings["generation.do_sample"] is False and settings["seed"] is None
    # now records are finished: other settings are refused, naming what differs
    os.remove(out)
    assert infer.main(argv + ["--temperature", "0.7"]) == 2
    assert "generation.do_sample: was False, now True" in caplog.text + capsys.readouterr().err


def test_temperature_zero_is_greedy_in_infer_and_quick_inference(tmp_path, tiny_base_dir, capsys):
    path = _records(tmp_path)
    preds = {}
    for name, flags in (("t0", ["--temperature", "0"]), ("greedy", ["--do_sample", "false"])):
        out = tmp_path / f"{name}.json"
        argv = ["--json_input", str(path), "--json_output", str(out), "--base_model", str(tiny_base_dir), *TEXT]
        assert infer.main(argv + flags + ["--seed", "1" if name == "t0" else "2"]) == 0
        preds[name] = [r["prediction"] for r in json.loads(out.read_text())]
    assert preds["t0"] == preds["greedy"]
    from fusionaudio.infer.quick import quick_inference_main

    answers = {}
    for flags in (["--temperature", "0"], ["--greedy"]):
        capsys.readouterr()
        assert quick_inference_main(["--base_model", str(tiny_base_dir), "--question", "Question 0?", "--device",
                                     "cpu", "--max_tokens", "3", "--json", *flags]) == 0
        answers[flags[0]] = json.loads(capsys.readouterr().out)[0]["response"]
    assert answers["--temperature"] == answers["--greedy"] == preds["greedy"][0]


def test_loader_workers_arm_the_parent_death_signal():
    """The worker set-up itself: after ``die_with_parent`` the kernel holds SIGKILL as this process's
    parent-death signal (read back with PR_GET_PDEATHSIG)."""
    code = textwrap.dedent("""
        import ctypes, os, signal
        from fusionaudio.infer.loader import die_with_parent
        die_with_parent(os.getppid())
        sig = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
        print(sig.value == signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
