"""The whole pipeline under the local engine: outputs, bad clips, reruns, and kill -9 then restart."""

import json
from pathlib import Path

import pytest
from pipeline_helpers import (FakeChatServer, fast_stages, kill_when, read_jsonl, run_cli, snapshot_results,
                              write_config)

from fusionaudio.pipeline import synthetic
from fusionaudio.pipeline.config import STAGE_ORDER, load_config
from fusionaudio.pipeline.run import RestartMismatch, run_pipeline

GOOD, BAD = ("speech", "melody", "melody_part", "scene_video"), ("silent", "mute_video", "corrupt", "missing")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    clips = synthetic.make_example_clips(root / "clips", with_bad=True)
    with FakeChatServer() as server:
        yield {"root": root, "clips": clips, "server": server, "tiny": tmp_path_factory.getbasetemp() / "pipeline_tiny"}


def config(env, name, **top):
    return write_config(env["root"] / f"{name}.yaml", env["clips"], env["root"] / name, env["tiny"],
                        fast_stages(env["server"].base_url), **top)


@pytest.fixture(scope="module")
def clean_run(env):
    cfg = load_config(config(env, "clean"))
    return cfg, run_pipeline(cfg)


def test_end_to_end_outputs(clean_run):
    cfg, summary = clean_run
    out = cfg.output_dir
    st = summary["stages"]
    assert (st["prepare"]["ok"], st["prepare"]["error"]) == (4, 4)
    for name in STAGE_ORDER:
        rows = read_jsonl(out / "stages" / f"{name}.jsonl")
        assert sorted(r["clip_id"] for r in rows) == sorted(GOOD + BAD)  # one result per clip and stage
        for r in rows:
            if r["clip_id"] in BAD:
                assert r["status"] == ("error" if name == "prepare" else "skipped")
                assert name == "prepare" or r["error"].startswith("prepare error: ")
    assert {e["clip_id"] for e in summary["errors"] if e["stage"] == "prepare"} == set(BAD)
    vis = {r["clip_id"]: r for r in read_jsonl(out / "stages" / "visual_caption.jsonl")}
    assert vis["scene_video"]["status"] == "ok" and vis["speech"]["status"] == "skipped"
    usage = summary["modality_usage"]
    assert usage["fused_clips"] == 4 and usage["per_cue"]["visual_caption"] == 1 and usage["per_cue"]["tagging"] == 4
    kept = [c for c in GOOD if json.loads((out / "work/results/clap_filter" / f"{c}.json").read_text())["status"] == "ok"]
    assert st["clap_filter"]["ok"] == len(kept) and st["clap_filter"]["ok"] + st["clap_filter"]["filtered"] == 4
    records = read_jsonl(out / "records.jsonl")
    expected = {"caption": len(kept), "qa": 2 * len(kept)} if kept else {}
    assert summary["records"] == expected and len(records) == 3 * len(kept)
    assert all(set(r) >= {"audio_id", "instruction", "input", "dataset", "task", "output"} for r in records)
    assert summary["clap"]["n"] == 4 and (out / "clap_scores.png").stat().st_size > 1000


def test_records_are_training_data(clean_run):
    from fusionaudio.gama.data import select_records

    cfg, summary = clean_run
    records, report = select_records(cfg.output_dir / "records.jsonl", deep=True)
    assert report.ok and len(records) == sum(summary["records"].values()) > 0
    assert {r["task"] for r in records} == {"caption", "qa"} and {r["dataset"] for r in records} == {"test"}


def test_rerun_computes_nothing_and_changed_settings_are_refused(env, clean_run):
    cfg, _ = clean_run
    before = snapshot_results(cfg.output_dir)
    summary = run_pipeline(load_config(config(env, "clean")))
    assert snapshot_results(cfg.output_dir) == before
    assert all(v.get("done_before") == 8 for v in summary["run"].values())
    changed = fast_stages(env["server"].base_url)
    changed["clap_filter"]["threshold"] = 0.3
    path = write_config(env["root"] / "changed.yaml", env["clips"], cfg.output_dir, env["tiny"], changed)
    with pytest.raises(RestartMismatch, match=r"\['clap_filter'\]"):
        run_pipeline(load_config(path))


def check_resumed(before: dict, output_dir: Path, clean_dir: Path) -> None:
    after = snapshot_results(output_dir)
    assert len(after) == len(STAGE_ORDER) * 8
    assert {k: after[k] for k in before} == before  # finished work kept as it was: nothing done twice
    runs = {json.loads(v)["run"] for v in after.values()}
    assert len(runs) == 2  # the killed run and the restart
    assert read_jsonl(output_dir / "records.jsonl") == read_jsonl(clean_dir / "records.jsonl")


@pytest.mark.slow
def test_kill_9_then_restart_local(env, clean_run):
    cfg_path = config(env, "killed")
    before = kill_when(run_cli(cfg_path), env["root"] / "killed", min_results=30)
    assert 30 <= len(before) < len(STAGE_ORDER) * 8
    proc = run_cli(cfg_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    check_resumed(before, env["root"] / "killed", clean_run[0].output_dir)


@pytest.mark.slow
def test_bundled_example_config_runs_end_to_end(tmp_path, tmp_path_factory):
    example = Path(__file__).resolve().parents[2] / "configs" / "pipeline" / "example.yaml"
    proc = run_cli(example, "--output_dir", str(tmp_path / "out"),
                   "--tiny_models_dir", str(tmp_path_factory.getbasetemp() / "pipeline_tiny"))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["clips"] == 4 and all(summary["stages"][s]["ok"] == 4 for s in ("prepare", "separation", "fusion"))
    assert summary["stages"]["visual_caption"]["ok"] == 1 and summary["clap"]["n"] == 4
    assert summary["records"].get("caption", 0) == summary["stages"]["clap_filter"]["ok"]
