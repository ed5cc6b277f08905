"""The Llama half of a loaded GAMA model as vLLM reads it: a plain Hugging Face Llama directory
(``config.json`` + ``model.safetensors``) and, when the model carries LoRA, a peft adapter directory
for a vLLM ``LoRARequest``.

A GAMA base directory cannot be handed to vLLM as it is: its shards also hold the audio side
(``model.audio_encoder.*``, ``model.Qformer.*``, ...), which vLLM's Llama loader refuses. So the
weights are written once from the model our strict loader built (the audio side stays in our
encoder) into a cache folder named after the source files (names, sizes, modification times) and
the dtype; a later start with the same files reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch

log = logging.getLogger("fusionaudio.gama.vllm")

#: Bump when the written layout changes (old cache folders are then not reused).
LAYOUT_VERSION = 1
CACHE_ENV = "FUSIONAUDIO_CACHE"
COMPLETE = "fusionaudio_vllm.json"
LORA_MARK = ".lora_"


def cache_root() -> Path:
    """``$FUSIONAUDIO_CACHE/vllm`` or ``~/.cache/fusionaudio/vllm``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "fusionaudio") / "vllm"


def _fingerprint(path: Path) -> list:
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    rows = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        rows.append([str(f.relative_to(path)), st.st_size, st.st_mtime_ns])
    return rows


def cache_key(sources: list, dtype: torch.dtype, tag: str = "") -> str:
    """A name for the folder written from ``sources`` (model directories / checkpoint files) in ``dtype``
    (``tag``: anything else that changes what is written)."""
    parts = [LAYOUT_VERSION, str(dtype), tag]
    for source in sources:
        if source is not None:
            parts.append([str(Path(source).resolve()), _fingerprint(Path(source))])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def split_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(plain Llama weights, peft adapter weights) of a Llama state dict into which peft injected LoRA:
    ``...q_proj.base_layer.weight`` -> ``...q_proj.weight``; ``...q_proj.lora_A.default.weight`` ->
    ``base_model.model....q_proj.lora_A.weight`` (the names of peft's ``adapter_model.safetensors``)."""
    base, adapter = {}, {}
    for name, tensor in state.items():
        if LORA_MARK in name:
            module, _, rest = name.partition(LORA_MARK)
            kind, _, tail = rest.partition(".")  # kind: A / B; tail: default.weight
            adapter[f"base_model.model.{module}{LORA_MARK}{kind}.{tail.rpartition('.')[2]}"] = tensor
        else:
            base[name.replace(".base_layer.", ".")] = tensor
    return base, adapter


def _llama_config(model) -> dict:
    config = model.llm.config.to_dict()
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    for key in ("_name_or_path", "transformers_version", "fusionaudio"):
        config.pop(key, None)
    return config


def _write(model, out: Path, dtype: torch.dtype) -> bool:
    """Write the Llama directory (and ``lora/`` if the model has LoRA) into ``out``; True if LoRA was written."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.llm.state_dict().items()}
    base, adapter = split_lora(state)
    if getattr(model.llm.config, "tie_word_embeddings", False):
        base.pop("lm_head.weight", None)  # vLLM ties it to the embedding
    out.mkdir(parents=True)
    config = _llama_config(model)
    config["torch_dtype"] = config["dtype"] = str(dtype).replace("torch.", "")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(base, str(out / "model.safetensors"), metadata={"format": "pt"})
    if not adapter:
        return False
    from peft import LoraConfig

    settings = model.config.lora
    lora_dir = out / "lora"
    lora_dir.mkdir()
    LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
               target_modules=sorted({k.split(LORA_MARK)[0].rpartition(".")[2] for k in adapter}),
               base_model_name_or_path=str(out)).save_pretrained(str(lora_dir))
    save_file(adapter, str(lora_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return True


def llama_view(model, sources: list, dtype: torch.dtype, root: Path | None = None,
               tag: str = "") -> tuple[Path, Path | None]:
    """(Llama directory, LoRA adapter directory or None) for vLLM, written once per source files, dtype and
    ``tag`` into ``root`` (default :func:`cache_root`) and reused after."""
    root = Path(root) if root is not None else cache_root()
    out = root / cache_key(sources, dtype, tag)
    if not (out / COMPLETE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
        try:
            lora = _write(model, tmp, dtype)
            (tmp / COMPLETE).write_text(json.dumps({"sources": [str(s) for s in sources if s is not None],
                                                    "dtype": str(dtype), "lora": lora}) + "\n")
            if out.exists():  # an unfinished earlier attempt
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("wrote the Llama weights for vLLM to %s", out)
    else:
        log.info("reusing the Llama weights for vLLM in %s", out)
    lora = json.loads((out / COMPLETE).read_text())["lora"]
    return out, (out / "lora" if lora else None)
