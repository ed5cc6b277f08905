"""GAMA's Llama in 8 or 4 bits, quantized while a base directory is read (``load_model(..., quantize=)``).

The seven linear layers of every Llama block (attention q/k/v/o, MLP gate/up/down) are quantized one weight
at a time as :func:`fusionaudio.gama.loading.load_base` reads them, and each weight's file pages are handed
back at once, so memory holds the quantized model plus one full-precision matrix at most. The audio side,
the embeddings, the norms and ``lm_head`` stay in the compute dtype; LoRA is put on after the quantized
layers are in place (peft's bitsandbytes LoRA layers, unmerged).
"""

from __future__ import annotations

import re

import torch

from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import listing
from fusionaudio.loading.quantize import (bitsandbytes_module, check_quantize, quantized_linear, release_file_pages,
                                         release_free_memory)

#: The Llama weights that are quantized (our names; ``base_layer`` when LoRA wraps the layer).
_TARGET = re.compile(r"^llm\.model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
                     r"(?:\.base_layer)?\.weight$")


class LlmQuantizer:
    """Collects the quantized Llama layers while the weight files are read, then puts them in place."""

    def __init__(self, method: str, device, dtype: torch.dtype):
        self.method = check_quantize(method)
        if self.method is None:
            raise ValueError("LlmQuantizer needs quantize='int8' or 'nf4'")
        bitsandbytes_module(self.method)  # no bitsandbytes: the install hint before any file is read
        self.device, self.dtype = torch.device(device), dtype
        self.modules: dict[str, torch.nn.Module] = {}
        self.keys: set[str] = set()

    def takes(self, name: str) -> bool:
        return bool(_TARGET.match(name))

    def add(self, name: str, tensor: torch.Tensor, path) -> None:
        """Quantize the weight ``name`` (read from the file ``path``) and release its pages."""
        module_name = name[: -len(".weight")].replace(".base_layer", "")
        self.modules[module_name] = quantized_linear(tensor, self.method, self.dtype, self.device)
        self.keys.add(name)
        release_file_pages(tensor, path)
        release_free_memory()

    def install(self, model, state: dict[str, torch.Tensor]) -> None:
        """Put the quantized layers into ``model`` (built on the meta device, without LoRA) and assign the
        rest of ``state`` (this project's names; LoRA tensors are left for :meth:`add_lora`)."""
        for name, module in self.modules.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)
        plain = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
        result = model.load_state_dict(plain, strict=False, assign=True)
        missing = [k for k in result.missing_keys if k.rpartition(".")[0] not in self.modules]
        if missing or result.unexpected_keys:  # the caller checked every key: this is a bug, not bad input
            raise CheckpointError(f"quantized load: {listing(missing)} missing, {listing(result.unexpected_keys)} "
                                  "unexpected")

    def add_lora(self, model, settings, state: dict[str, torch.Tensor]) -> None:
        """LoRA over the quantized layers (peft picks its bitsandbytes layers), in the compute dtype on the
        model's device, with the LoRA tensors of ``state`` when the directory holds them."""
        model.enable_lora(settings)
        lora = {k: v for k, v in state.items() if ".lora_" in k}
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.data = (lora[name] if name in lora else param.data).to(device=self.device, dtype=self.dtype)


def quantize_llama(model, method: str, dtype: torch.dtype) -> None:
    """Quantize the Llama linear layers of an in-memory ``model`` without LoRA, one layer at a time, each
    full-precision weight freed as its quantized layer replaces it (for models built in memory, e.g. the
    benchmarks' random ones; directories load quantized with ``load_model(..., quantize=)``)."""
    quant = LlmQuantizer(method, model.device, dtype)
    names = [n[: -len(".weight")] for n, _ in model.named_parameters() if quant.takes(n) and ".base_layer" not in n]
    if len(names) != 7 * len(model.llm.model.layers):
        raise ValueError("quantize_llama takes a model without LoRA (LoRA goes on over the quantized layers)")
    for name in names:
        parent, _, child = name.rpartition(".")
        weight = model.get_submodule(name).weight.data
        setattr(model.get_submodule(parent), child, quantized_linear(weight, method, dtype, model.device))
        del weight
