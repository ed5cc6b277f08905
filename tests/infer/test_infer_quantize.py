"""``--quantize {none,int8,nf4}`` through every inference driver: quick_inference (the bundled clip is still
captioned right), ``python -m fusionaudio.infer`` (workers and resumes included), serve and the web demo; and
the one-line answer when bitsandbytes is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fusionaudio.infer.quick import quick_inference_main
from fusionaudio.loading.quantize import quantization_of

CLIP = Path(__file__).resolve().parents[2] / "data" / "example" / "demo_clip.wav"


@pytest.mark.parametrize("method", ["int8", "nf4"])
def test_bundled_clip_is_still_captioned_right(method, capsys):
    """Every event's type, pitch, loudness, length, the chirp's direction, the noise colour and the click
    count, scored against the scene the clip was rendered from (as the full-precision model's caption is)."""
    from fusionaudio.demo.scenes import DEMO_SCENE
    from fusionaudio.demo.score import attribute_accuracy

    code = quick_inference_main(["--audio", str(CLIP), "--question", "Describe the audio.", "--device", "cpu",
                                 "--greedy", "--json", "--quantize", method])
    out = capsys.readouterr().out
    assert code == 0
    caption = json.loads(out)[0]["response"]
    assert attribute_accuracy(caption, DEMO_SCENE)["overall"] == 1.0, caption


def test_missing_bitsandbytes_is_one_line_saying_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    code = quick_inference_main(["--audio", str(CLIP), "--device", "cpu", "--quantize", "int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: quantize='int8' needs bitsandbytes") and "pip install" in err[0]
    assert quick_inference_main(["--audio", str(CLIP), "--device", "cpu", "--greedy", "--max_tokens", "4"]) == 0


def test_bad_quantize_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        quick_inference_main(["--audio", str(CLIP), "--quantize", "int4"])
    assert exit_.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_batch_inference_loads_quantized_and_records_it(tiny_base_dir, audio_files, tmp_path, monkeypatch):
    import fusionaudio.inference
    from fusionaudio import infer
    from fusionaudio.infer.cli import build_parser
    from fusionaudio.infer.runners import _child_argv

    engines = []
    create = fusionaudio.inference.create_inference
    monkeypatch.setattr(fusionaudio.inference, "create_inference", lambda *a, **k: engines.append(create(*a, **k))
                        or engines[-1])
    data = tmp_path / "in.json"
    data.write_text(json.dumps([{"audio_id": str(audio_files[0]), "instruction": "Describe the audio."}]))
    out = tmp_path / "out.json"
    common = ["--json_input", str(data), "--json_output", str(out), "--base_model", str(tiny_base_dir),
              "--do_sample", "false", "--max_new_tokens", "4", "--device", "cpu", "--no_progress"]
    assert infer.main([*common, "--quantize", "nf4"]) == 0
    assert quantization_of(engines[0].model) == "nf4"
    assert json.loads(out.read_text())[0]["prediction"]
    settings = json.loads((tmp_path / "out.json.parts" / "run_config.json").read_text())["settings"]
    assert settings["quantize"] == "nf4"
    assert infer.main([*common, "--quantize", "int8"]) == 2  # a resume with other settings is refused
    args = build_parser().parse_args([*common, "--quantize", "int8"])
    args.dtype = "float32"
    argv = _child_argv(args, 0, 2, "cpu", "run")
    assert argv[argv.index("--quantize") + 1] == "int8"  # --num_workers children load it the same way


def test_serve_and_demo_load_the_model_quantized(tiny_base_dir):
    from fusionaudio.serve.cli import demo_parser, load_backend, serve_parser

    backend = load_backend(serve_parser().parse_args(["--base_model", str(tiny_base_dir), "--quantize", "int8"]))
    assert quantization_of(backend.engine.model) == "int8"
    assert demo_parser().parse_args(["--quantize", "nf4"]).quantize == "nf4"
