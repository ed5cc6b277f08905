"""The Ray Data engine on a local 2-CPU Ray (Ray 2.60 has no local_mode): the same results as the local
engine, and kill -9 then restart. Few tests: Ray actors are slow to start on 2 shared cores."""

import json

import pytest
from pipeline_helpers import FakeChatServer, fast_stages, kill_when, read_jsonl, run_cli, snapshot_results, write_config

from fusionaudio.pipeline import synthetic
from fusionaudio.pipeline.config import STAGE_ORDER, load_config
from fusionaudio.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow
RAY = {"num_cpus": 2, "include_dashboard": False}
VOLATILE = ("run", "seconds", "time")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    clips = synthetic.make_example_clips(root / "clips", with_bad=True)
    lines = (root / "clips/clips.csv").read_text().splitlines()
    (root / "clips/clips.csv").write_text("\n".join(l for l in lines if not l.startswith(("silent", "mute"))) + "\n")
    with FakeChatServer() as server:
        yield {"root": root, "clips": clips, "server": server, "tiny": tmp_path_factory.getbasetemp() / "pipeline_tiny"}


def results(output_dir):
    """Every result without its run id and timings, with the output folder's path replaced by OUT."""
    return {k: {f: v for f, v in json.loads(t.replace(str(output_dir), "OUT")).items() if f not in VOLATILE}
            for k, t in snapshot_results(output_dir).items()}


def test_ray_engine_matches_local_engine(env):
    import ray

    stages = fast_stages(env["server"].base_url)
    local = load_config(write_config(env["root"] / "l.yaml", env["clips"], env["root"] / "local", env["tiny"], stages))
    run_pipeline(local)
    cfg = load_config(write_config(env["root"] / "r.yaml", env["clips"], env["root"] / "ray", env["tiny"], stages,
                                   engine="ray", ray=RAY))
    try:
        summary = run_pipeline(cfg)
    finally:
        ray.shutdown()
    assert summary["engine"] == "ray" and summary["run"]["ray"]["clips"] == 6
    assert len(snapshot_results(cfg.output_dir)) == 6 * len(STAGE_ORDER)
    assert results(cfg.output_dir) == results(local.output_dir)
    assert read_jsonl(cfg.output_dir / "records.jsonl") == read_jsonl(local.output_dir / "records.jsonl")


def test_ray_kill_9_then_restart(env):
    stages = fast_stages(env["server"].base_url, separation=False)
    for name in ("asr", "audio_caption", "music_caption", "visual_caption"):
        stages[name]["enabled"] = False
    path = write_config(env["root"] / "k.yaml", env["clips"], env["root"] / "killed", env["tiny"], stages,
                        engine="ray", ray=RAY)
    before = kill_when(run_cli(path), env["root"] / "killed", min_results=8, timeout=400)
    assert 8 <= len(before) < 6 * 6
    proc = run_cli(path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert b"is deprecated in Ray" not in out  # one actor pool per stage, made the current way
    after = snapshot_results(env["root"] / "killed")
    assert {k: after[k] for k in before} == before  # nothing lost, nothing done twice
    done = {k.split("/")[0] for k in after}
    assert len(after) == 6 * len(done) and done == {"prepare", "tagging", "fusion", "clap_filter", "qa"}
    local = load_config(write_config(env["root"] / "kl.yaml", env["clips"], env["root"] / "killed_local", env["tiny"],
                                     stages))
    run_pipeline(local)
    assert read_jsonl(env["root"] / "killed" / "records.jsonl") == read_jsonl(local.output_dir / "records.jsonl")
