"""quick_inference.py end to end, in a subprocess, against a tiny reference-format model."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import REPO


def _run(*args, timeout=300):
    cmd = [sys.executable, str(REPO / "quick_inference.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_cli_json_batch_with_finetuned_checkpoint(tiny_base_dir, tiny_model, audio_files, tmp_path):
    from fusionaudio.gama.inference import FusionAudioInference
    from fusionaudio.gama.tiny import reference_finetuned_state

    model, _ = tiny_model
    ckpt = tmp_path / "fusionaudio_checkpoint.pth"
    torch.save(reference_finetuned_state(model), ckpt)
    folder = tmp_path / "clips"
    folder.mkdir()
    for p in audio_files[1:]:
        (folder / p.name).write_bytes(p.read_bytes())
    proc = _run("--base_model", tiny_base_dir, "--model_path", ckpt, "--audio", audio_files[0], folder,
                "--question", "Describe the audio.", "--device", "cpu", "--greedy", "--max_tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["audio"] for r in results] == [str(audio_files[0])] + sorted(str(folder / p.name) for p in audio_files[1:])
    assert results[0]["audio_info"]["sample_rate"] == 16000 and results[2]["audio_info"]["channels"] == 2
    engine = FusionAudioInference(tiny_base_dir, ckpt)
    expected = engine.predict_batch([r["audio"] for r in results], "Describe the audio.", do_sample=False,
                                    max_new_tokens=8)
    assert [r["response"] for r in results] == expected


def test_cli_text_only_and_cuda_fallback(tiny_base_dir):
    proc = _run("--base_model", tiny_base_dir, "--question", "Hello?", "--max_tokens", "4", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert "Response:" in proc.stdout
    if not torch.cuda.is_available():
        assert "CUDA is not available" in proc.stderr


def test_cli_bad_inputs_fail_with_one_line(tiny_base_dir, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"\x00garbage" * 50)
    cases = [
        (["--base_model", tiny_base_dir, "--audio", tmp_path / "missing.wav"], "missing.wav"),
        (["--base_model", tiny_base_dir, "--audio", corrupt], "corrupt.wav"),
        (["--base_model", tmp_path / "no_model", "--question", "hi"], "no_model"),
        (["--base_model", tiny_base_dir, "--model_path", tmp_path / "nope.pth"], "nope.pth"),
        (["--base_model", tiny_base_dir, "--dtype", "float8"], "float8"),
    ]
    for args, needle in cases:
        proc = _run(*args, "--device", "cpu", "--max_tokens", "2")
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_cli_audsemthinker_arch_is_detected_and_structured(audio_files, tmp_path):
    from fusionaudio.audsem.tiny import build_tiny_checkpoint

    omni = build_tiny_checkpoint(tmp_path / "omni", full_omni=True)
    proc = _run("--base_model", omni, "--audio", audio_files[0], "--device", "cpu", "--greedy",
                "--max_tokens", "6", "--json", "--structured")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert isinstance(result["response"], str) and set(result["structured"]) >= {"think", "answer", "complete"}
    proc = _run("--base_model", omni, "--arch", "gama", "--device", "cpu", "--max_tokens", "2")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- edges (in process)


def test_folder_expansion_reports_what_it_skipped(tmp_path):
    import pytest

    from fusionaudio.errors import UsageError
    from fusionaudio.audio.decode import expand_audio_args

    for name in ("a.au", "b.caf", "c.w64", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.wav").write_bytes(b"x")
    skipped = []
    assert expand_audio_args([str(tmp_path)], skipped=skipped) == [str(tmp_path / n) for n in ("a.au", "b.caf", "c.w64")]
    assert skipped == [str(tmp_path / "notes.txt"), str(tmp_path / "sub") + "/"]
    skipped = []
    assert expand_audio_args([str(tmp_path)], recursive=True, skipped=skipped)[-1] == str(tmp_path / "sub" / "d.wav")
    assert skipped == [str(tmp_path / "notes.txt")]
    with pytest.raises(UsageError, match="empty argument"):
        expand_audio_args([""])
    assert expand_audio_args(None) == [None]


def test_an_existing_path_named_empty_is_audio(tiny_base_dir, audio_files, tmp_path, monkeypatch, capsys):
    from fusionaudio.infer.quick import quick_inference_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").write_bytes(audio_files[0].read_bytes())
    common = ["--base_model", str(tiny_base_dir), "--device", "cpu", "--greedy", "--max_tokens", "3", "--json"]
    assert quick_inference_main(["--audio", "empty", *common]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["audio_info"]["sample_rate"] == 16000 and result["error"] is None
    (tmp_path / "empty").unlink()
    assert quick_inference_main(["--audio", "empty", *common]) == 2
    err = capsys.readouterr().err
    assert "empty: file not found" in err and "leave out --audio" in err


def test_json_prints_every_input_and_fails_when_one_did(tiny_base_dir, audio_files, tmp_path, capsys):
    from fusionaudio.infer.quick import quick_inference_main
    from fusionaudio.gama.inference import FusionAudioInference

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnope")
    paths = [str(audio_files[0]), str(bad), str(audio_files[1])]
    code = quick_inference_main(["--base_model", str(tiny_base_dir), "--audio", *paths, "--device", "cpu", "--greedy",
                                 "--max_tokens", "4", "--json", "--batch_size", "1", "--loader_workers", "1"])
    out = capsys.readouterr()
    assert code == 1 and "1 of 3 inputs failed" in out.err
    results = json.loads(out.out)
    assert [r["audio"] for r in results] == paths
    assert results[1]["response"] is None and "bad.wav" in results[1]["error"]
    engine = FusionAudioInference(tiny_base_dir)
    expected = engine.predict_batch([paths[0], paths[2]], "Please describe this audio in detail.", do_sample=False,
                                    max_new_tokens=4)
    assert [results[0]["response"], results[2]["response"]] == expected


def test_bundled_demo_model_gets_its_clip_right():
    """`make demo` (seeded sampling) and greedy decoding name every event of the bundled clip
    right: its type, pitch, loudness, length, the chirp's direction, the noise colour and the
    click count (scored against the scene the clip was rendered from)."""
    from fusionaudio.demo.scenes import DEMO_SCENE
    from fusionaudio.demo.score import attribute_accuracy

    for flags in (["--seed", "0"], ["--greedy"]):
        proc = _run("--audio", REPO / "data" / "example" / "demo_clip.wav", "--question", "Describe the audio.",
                    "--device", "cpu", "--json", *flags)
        assert proc.returncode == 0, proc.stderr
        caption = json.loads(proc.stdout)[0]["response"]
        score = attribute_accuracy(caption, DEMO_SCENE)
        assert score["overall"] == 1.0, (flags, caption, score)
