"""fusionaudio export --merge: LoRA folded into the Llama weights, a reference-format directory."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from fusionaudio.cli import main
from fusionaudio.gama.keymap import reference_to_local
from fusionaudio.gama.loading import load_model
from fusionaudio.gama.tiny import reference_finetuned_state


def _finetuned(tiny_base_dir, tmp_path):
    """A fine-tuned checkpoint with random LoRA and a changed audio side."""
    model, _ = load_model(tiny_base_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or n.startswith("query_tokens"):
                p.normal_(0, 0.3)
    path = tmp_path / "ft.pth"
    torch.save(reference_finetuned_state(model), path)
    return path


def _logits(model, tok):
    ids = tok(["### Instruction:\nDescribe  the audio.\n\n### Response:\n"], return_tensors="pt").input_ids
    fb = torch.randn(1, 1024, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model(ids, fb).logits


def test_merged_export_loads_without_adapter_and_gives_the_same_logits(tiny_base_dir, tmp_path):
    ckpt = _finetuned(tiny_base_dir, tmp_path)
    out = tmp_path / "merged"
    assert main(["export", "--base_model", str(tiny_base_dir), "--model_path", str(ckpt), "--output", str(out),
                 "--merge"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert not any("lora" in n for n in names)
    assert "model.layers.0.self_attn.q_proj.weight" in names and "model.query_tokens" in names
    for n in names:  # the reference's key names, every one mapped
        assert reference_to_local(n) is not None, n
    with safe_open(str(out / sorted(set(index["weight_map"].values()))[0]), "pt") as f:
        assert set(f.keys()) <= names
    assert not (out / "fusionaudio_config.json").exists() and (out / "tokenizer.model").is_file()
    merged, tok = load_model(out)
    assert not merged.lora_enabled and not any(".lora_" in n for n, _ in merged.named_parameters())
    ref, ref_tok = load_model(tiny_base_dir, ckpt)
    torch.testing.assert_close(_logits(merged, tok), _logits(ref, ref_tok), atol=1e-4, rtol=0)
    assert (_logits(merged, tok) - _logits(load_model(tiny_base_dir)[0], tok)).abs().max() > 1e-3  # LoRA mattered


def test_export_without_merge_is_convert_and_bf16_export(tiny_base_dir, tmp_path):
    ckpt = _finetuned(tiny_base_dir, tmp_path)
    assert main(["export", "--base_model", str(tiny_base_dir), "--model_path", str(ckpt),
                 "--output", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain" / "fusionaudio_config.json").is_file()
    plain, _ = load_model(tmp_path / "plain")
    assert plain.lora_enabled
    assert main(["export", "--base_model", str(tiny_base_dir), "--model_path", str(ckpt),
                 "--output", str(tmp_path / "bf16"), "--merge", "--dtype", "bfloat16"]) == 0
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16" and cfg["fusionaudio"]["lora"] is None
    model, _ = load_model(tmp_path / "bf16", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_audsemthinker_merged_export_gives_the_same_logits(tmp_path):
    from fusionaudio.audsem.loading import load_thinker
    from fusionaudio.audsem.tiny import build_tiny_checkpoint
    from fusionaudio.audsem.train import add_lora

    base = build_tiny_checkpoint(tmp_path / "omni", full_omni=True, seed=0)
    tuned = add_lora(load_thinker(base))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    tuned.save_pretrained(str(tmp_path / "adapter"))
    assert main(["export", "--base_model", str(base), "--model_path", str(tmp_path / "adapter"),
                 "--output", str(tmp_path / "merged"), "--merge"]) == 0
    index = json.loads((tmp_path / "merged" / "model.safetensors.index.json").read_text())
    assert all(k.startswith("thinker.") and "lora" not in k for k in index["weight_map"])
    merged = load_thinker(tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        want = tuned.eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert (want - load_thinker(base)(input_ids=ids).logits).abs().max() > 1e-3
