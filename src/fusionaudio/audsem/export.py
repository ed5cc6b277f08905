"""AudSemThinker merged export: the LoRA folded into the thinker, written in the released key layout."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from fusionaudio.audsem.adapter import apply_adapter
from fusionaudio.audsem.keymap import released_name
from fusionaudio.audsem.loading import load_thinker
from fusionaudio.loading.quantize import merge_note
from fusionaudio.loading.weights import resolve_dtype


def export_merged(base_model_path, model_path, output_dir, dtype=None, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """AudSemThinker merged export: the adapter folded into the thinker (peft's ``merge_and_unload``),
    written in the released key layout (``thinker.*`` safetensors shards + index) beside the base's
    config, tokenizer, feature-extractor and chat-template files; loads with ``load_thinker``."""
    from safetensors.torch import save_file


    base, out = Path(base_model_path), Path(output_dir)
    if note := merge_note(model_path, "train_config.json"):
        logging.getLogger("fusionaudio.audsem.export").warning(note)
    model = load_thinker(base)
    if model_path is not None:
        model = apply_adapter(model, model_path).merge_and_unload()
    dtype = resolve_dtype(dtype) if dtype is not None else None
    state = {released_name(k): (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    names, shards, size = sorted(state), [[]], 0
    for name in names:
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k] for k in keys}, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    for f in base.iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja", ".txt", ".model") and "safetensors" not in f.name:
            shutil.copyfile(f, out / f.name)
    return out
