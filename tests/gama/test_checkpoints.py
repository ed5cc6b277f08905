"""Checkpoint files and configs (fusionaudio.gama.checkpoints): values, malformed files, remote code."""

from __future__ import annotations

import json

import pytest
import torch

from fusionaudio.gama.loading import CheckpointError, load_model, save_local
from fusionaudio.gama.tiny import reference_finetuned_state

from test_loading import _with_lora


def test_non_finite_or_wrongly_typed_tensors_are_named(tiny_base_dir, tmp_path):
    """NaN/inf or integer tensors in a base or fine-tuned file: an error naming them (on by default)."""
    import shutil

    model = _with_lora(tiny_base_dir)
    lora = {k: v for k, v in reference_finetuned_state(model).items() if ".lora_" in k}
    name = sorted(lora)[0]
    for case, value, message in (("nan", float("nan"), "NaN/inf"), ("int", None, "wrong type")):
        bad = dict(lora)
        bad[name] = bad[name].clone().fill_(value) if value is not None else torch.ones_like(bad[name], dtype=torch.int64)
        torch.save(bad, tmp_path / f"{case}.pth")
        with pytest.raises(CheckpointError, match=rf"{case}\.pth.*{message}.*{name.replace('.', '[.]')}.*" + ("int64" if case == "int" else "")):
            load_model(tiny_base_dir, tmp_path / f"{case}.pth")
        load_model(tiny_base_dir, tmp_path / f"{case}.pth", check_values=False)  # the opt-out
    base = tmp_path / "base_inf"
    shutil.copytree(tiny_base_dir, base)
    shard = sorted(base.glob("pytorch_model-*.bin"))[0]
    state = torch.load(shard, weights_only=True)
    key = next(k for k in state if k.startswith("model.layers.") and k.endswith("q_proj.weight"))
    state[key] = state[key].clone()
    state[key][0, 0] = float("inf")
    torch.save(state, shard)
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*NaN/inf.*q_proj"):
        load_model(base)


def test_malformed_configs_and_files_name_the_file_and_problem(tiny_base_dir, tmp_path):
    import shutil

    d = tmp_path / "local"
    conv = load_model(tiny_base_dir)
    save_local(conv[0], conv[1], d)
    cfg = d / "fusionaudio_config.json"
    good = cfg.read_text()
    cases = [('{"llm": {', "malformed JSON"), ("", "empty config"), ("[1]", "must be a JSON object"),
             (json.dumps({**json.loads(good), "audio": {"embed_dim": "wide", "patch_size": 16}}), "invalid model config")]
    for text, message in cases:
        cfg.write_text(text)
        with pytest.raises(CheckpointError, match=message) as err:
            load_model(d)
        assert str(cfg) in str(err.value)
    ref = tmp_path / "ref"
    shutil.copytree(tiny_base_dir, ref)
    llama = json.loads((ref / "config.json").read_text())
    (ref / "config.json").write_text(json.dumps({**llama, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(CheckpointError, match=r"config\.json: has an 'auto_map' entry"):
        load_model(ref)
    (ref / "config.json").write_text(json.dumps({**llama, "num_hidden_layers": "two"}))
    with pytest.raises(CheckpointError, match=r"config\.json: invalid model config: num_hidden_layers must be"):
        load_model(ref)
    (ref / "config.json").write_text('{"hidden_size": 32,,}')
    with pytest.raises(CheckpointError, match=r"config\.json: malformed JSON"):
        load_model(ref)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth: zero-byte checkpoint file"):
        load_model(tiny_base_dir, empty)
    loop = tmp_path / "loop.pth"
    loop.symlink_to(tmp_path / "loop2.pth")
    (tmp_path / "loop2.pth").symlink_to(loop)
    with pytest.raises(CheckpointError, match=r"loop\.pth: symlink loop"):
        load_model(tiny_base_dir, loop)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match=r"cut\.pth: cannot read checkpoint: \w+"):
        load_model(tiny_base_dir, truncated)


def test_the_value_check_opt_out_reaches_the_command_lines(tiny_base_dir, tmp_path):
    from fusionaudio.infer.quick import quick_inference_parser
    from fusionaudio.infer.cli import build_parser
    from fusionaudio.inference import create_inference

    model = _with_lora(tiny_base_dir)
    lora = {k: v for k, v in reference_finetuned_state(model).items() if ".lora_" in k}
    name = sorted(lora)[0]
    lora[name] = lora[name].clone().fill_(float("nan"))
    torch.save(lora, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="NaN/inf"):
        create_inference("gama", tiny_base_dir, tmp_path / "nan.pth")
    engine = create_inference("gama", tiny_base_dir, tmp_path / "nan.pth", check_values=False)
    lora_values = [p for n, p in engine.model.named_parameters() if ".lora_" in n]
    assert any(torch.isnan(p).any() for p in lora_values)  # loaded as it is, unchecked
    assert quick_inference_parser().parse_args(["--no_check_values"]).no_check_values
    assert build_parser().parse_args(["--json_input", "a", "--json_output", "b", "--no_check_values"]).no_check_values
