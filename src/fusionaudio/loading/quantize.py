"""Low-memory weights, shared by both families: a language model's linear layers held in 8 bits (LLM.int8)
or 4 bits (NF4) by bitsandbytes, quantized as each weight is read, so that no full-precision copy of the
whole model is ever in memory.

* ``--quantize {none,int8,nf4}`` (``quantize=`` in Python) everywhere: :func:`check_quantize`;
* a missing bitsandbytes is one line saying how to install it (:func:`bitsandbytes_module`);
* :func:`quantized_linear` turns one weight tensor into a frozen quantized ``Linear``;
* :func:`release_file_pages` hands back a memory-mapped weight's pages once its quantized copy exists, and
  :func:`release_free_memory` the heap memory quantizing leaves free;
* :func:`pack_for_cpu_inference` repacks NF4 weights for bitsandbytes' fast CPU kernel at load time;
* :func:`transformers_config` is the same choice for transformers' own loader (AudSemThinker);
* :func:`prepare_for_training` / :func:`refuse_merge`: QLoRA's frozen base, and no LoRA merged into it.

Importing this module does not import torch: ``fusionaudio/__init__`` calls :func:`quiet_bitsandbytes` first.
"""

from __future__ import annotations

import logging
import mmap
import os
import sys
from typing import TYPE_CHECKING

from fusionaudio.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    import torch

QUANTIZE_CHOICES = ("none", "int8", "nf4")
#: The ``--quantize`` help of every command.
QUANTIZE_HELP = ("the language model in 8 bits (int8: LLM.int8) or 4 bits (nf4), quantized as it loads (needs "
                 "bitsandbytes); the audio side stays in --dtype")
#: The bitsandbytes release this project is tested with (requirements.txt, the ``quant`` extra).
BITSANDBYTES = "bitsandbytes==0.50.2"
#: LLM.int8's outlier threshold: activation columns above it are multiplied in 16 bits (its paper's and
#: bitsandbytes' / transformers' default).
INT8_THRESHOLD = 6.0
#: NF4 as QLoRA: blocks of 64 weights, the blocks' scales quantized again ("double quantization").
NF4_BLOCKSIZE = 64
#: bitsandbytes' fast CPU kernel for NF4 (AVX512-BF16) repacks only weights whose out_features divide by this
#: (and in_features by the block size).
_CPU_PACK_BLOCK = 32
#: Messages bitsandbytes logs on every int8 call with bf16/fp32 inputs (the cast is the method) and, on CPUs
#: with AVX512-BF16, at import (whoever imports it: peft does) when the optional ``kernels`` package, which
#: would download code from the Hub, is absent; neither asks anything of the user.
_NOISE = ("MatMul8bitLt: inputs will be cast", "Failed to load CPU gemm_4bit_forward")


def check_quantize(value) -> str | None:
    """``None`` for full precision (``None`` or ``"none"``), else ``"int8"`` or ``"nf4"``."""
    if value is None or value == "none":
        return None
    if value not in QUANTIZE_CHOICES:
        raise UsageError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {value!r}")
    return value


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


def quiet_bitsandbytes() -> None:
    """Drop bitsandbytes' two notices above (before it is imported, by us or by peft)."""
    for name in ("bitsandbytes.autograd._functions", "bitsandbytes.backends.cpu.ops"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())


def bitsandbytes_module(method: str):
    """``import bitsandbytes``, or a :class:`UsageError` of one line saying how to install it."""
    quiet_bitsandbytes()
    try:
        import bitsandbytes
    except ImportError:
        raise UsageError(f"quantize={method!r} needs bitsandbytes, which is not installed: "
                         f"pip install '{BITSANDBYTES}' (or pip install 'fusionaudio[quant]')") from None
    return bitsandbytes


def quantized_linear(weight: torch.Tensor, method: str, compute_dtype: torch.dtype, device) -> torch.nn.Module:
    """A frozen ``Linear8bitLt`` (``int8``) or ``Linear4bit`` (``nf4``, computing in ``compute_dtype``) on
    ``device``, quantized from ``weight`` ``[out, in]`` (any float dtype, e.g. a memory-mapped file's
    tensor); the module keeps no reference to ``weight``."""
    import torch

    bnb = bitsandbytes_module(method)
    out_features, in_features = weight.shape
    with torch.device("meta"):  # the module's own full-precision weight is never allocated
        if method == "int8":
            module = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False,
                                         threshold=INT8_THRESHOLD)
        else:
            module = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=compute_dtype,
                                       compress_statistics=True, quant_type="nf4")
    if method == "int8":
        module.weight = bnb.nn.Int8Params(weight.detach(), requires_grad=False, has_fp16_weights=False)
    else:
        module.weight = bnb.nn.Params4bit(weight.detach(), requires_grad=False, blocksize=NF4_BLOCKSIZE,
                                          compress_statistics=True, quant_type="nf4", module=module)
        module.support_avx512bf16_for_cpu = _cpu_kernel_takes(module)
    return module.to(device).eval()  # bitsandbytes quantizes on the move to a device


def is_quantized_module(module: torch.nn.Module) -> bool:
    """A bitsandbytes ``Linear8bitLt`` / ``Linear4bit`` (told by class, without importing bitsandbytes)."""
    return type(module).__module__.startswith("bitsandbytes.") and type(module).__name__.startswith("Linear")


def quantization_of(model: torch.nn.Module) -> str | None:
    """``"int8"``, ``"nf4"`` or ``None``: how ``model``'s quantized layers hold their weights."""
    for module in model.modules():
        if is_quantized_module(module):
            return "int8" if "8bit" in type(module).__name__ else "nf4"
    return None


def quantized_weight_shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    """Parameter name -> the ``[out, in]`` shape of every quantized weight of ``model`` (stored packed)."""
    import torch

    return {f"{name}.weight": torch.Size((m.out_features, m.in_features))
            for name, m in model.named_modules() if is_quantized_module(m)}


def refuse_quantized_keys(source, keys, model: torch.nn.Module) -> None:
    """A checkpoint may not set weights the model holds quantized: they were frozen when it was trained,
    and a float tensor cannot be loaded into 8 or 4 bits without being quantized again."""
    hit = sorted(set(keys) & set(quantized_weight_shapes(model)))
    if hit:
        from fusionaudio.loading.files import listing

        raise CheckpointError(f"{source}: sets {len(hit)} language-model weight(s) that this model holds quantized "
                              f"(quantize={quantization_of(model)!r}): {listing(hit)}; load it with quantize='none'")


def refuse_merge(model: torch.nn.Module) -> None:
    """LoRA is never merged into quantized weights (bitsandbytes' NF4 merge moves the logits even for an
    all-zero LoRA): merge over the full-precision base (``fusionaudio export --merge``) instead."""
    method = quantization_of(model)
    if method is not None:
        raise UsageError(f"this model's language model is quantized ({method}); LoRA is not merged into 8/4-bit "
                         "weights: load the base without quantize and merge there (fusionaudio export --merge)")


def merge_note(model_path, args_file: str) -> str | None:
    """What to tell a user who merges a checkpoint trained over a quantized base (``quantize`` recorded in the
    training output's ``args_file`` beside ``model_path``): the merge goes into the full-precision weights."""
    import json
    from pathlib import Path

    if model_path is None:
        return None
    path = Path(model_path)
    found = (path if path.is_dir() else path.parent) / args_file
    try:
        method = json.loads(found.read_text(encoding="utf-8")).get("quantize")
    except (OSError, ValueError, AttributeError):
        return None
    if method in (None, "none"):
        return None
    return (f"{model_path} was trained over a {method} base (QLoRA): its LoRA is merged into the full-precision "
            "weights, never into 8/4-bit ones, so the merged model answers as the full-precision base + LoRA")


def _cpu_kernel_takes(module: torch.nn.Module) -> bool:
    """Whether bitsandbytes' fast NF4 CPU kernel (AVX512-BF16, no backward) takes this layer: the CPU must
    have the instructions, and the kernel takes only some shapes."""
    from bitsandbytes.functional import has_avx512bf16

    return (has_avx512bf16() and module.out_features % _CPU_PACK_BLOCK == 0
            and module.in_features % NF4_BLOCKSIZE == 0)


def pack_for_cpu_inference(model: torch.nn.Module) -> None:
    """Repack NF4 weights for bitsandbytes' AVX512-BF16 CPU kernel now, one layer at a time, as its first
    forward would do all at once (measured on the 7B: +3.3 GB of freed-but-kept heap, 160 s in the first token).
    Undoes :func:`prepare_for_training`'s switch. The kernel keeps each block's scale in bf16, so its answers
    differ slightly from the training kernel's. No-op for int8, CUDA and layers the kernel does not take."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    for module in model.modules():
        if not (is_quantized_module(module) and hasattr(module, "support_avx512bf16_for_cpu")):
            continue
        weight = module.weight
        if weight.device.type != "cpu":
            continue
        module.support_avx512bf16_for_cpu = _cpu_kernel_takes(module)
        if not module.support_avx512bf16_for_cpu or getattr(weight.quant_state, "packing_format_for_cpu", False):
            continue
        weight.data, weight.quant_state = _convert_weight_packed_for_cpu(weight.data, weight.quant_state)
        module.quant_state = weight.quant_state
        release_free_memory()


def prepare_for_training(model: torch.nn.Module) -> None:
    """QLoRA: the quantized weights stay frozen; bitsandbytes' fast NF4 CPU kernel (taken in eval mode) has
    no backward, so it is switched off and any weight already repacked for it is unpacked (not exactly: the
    packed form keeps each block's scale in bf16)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    for module in model.modules():
        if not is_quantized_module(module):
            continue
        module.weight.requires_grad_(False)
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            state = module.weight.quant_state
            if getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state)
                module.quant_state = module.weight.quant_state


def transformers_config(method: str, compute_dtype: torch.dtype, keep: tuple[str, ...]):
    """transformers' ``BitsAndBytesConfig`` for ``method``; modules named by ``keep`` stay unquantized."""
    bitsandbytes_module(method)
    from transformers import BitsAndBytesConfig

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, llm_int8_skip_modules=list(keep))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=True, llm_int8_skip_modules=list(keep))


# -- memory ----------------------------------------------------------------------------------
_MADV_DONTNEED = 4


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; elsewhere nothing). glibc keeps
    freed blocks under 32 MB in its heap, and quantizing a layer frees many (its temporaries, the weight it
    replaces) between blocks that stay: without this the freed memory piles up, layer after layer."""
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        pass


def _private_file_mapping(start: int, end: int, path) -> bool:
    """Whether ``[start, end)`` lies in one private mapping of the file ``path`` (``/proc/self/maps``)."""
    target = os.path.realpath(path)
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= start and end <= hi:
                return len(fields) == 6 and fields[1].endswith("p") and fields[5].rstrip("\n") == target
    return False


def release_file_pages(tensor: torch.Tensor, path) -> bool:
    """Hand back the resident pages of ``tensor`` when it is read-only data memory-mapped from the weight
    file ``path`` (as ``load_state_file`` maps safetensors and zip ``.bin`` files): a later read maps them
    from the file again. Without this a weight file's pages stay resident until the whole file is closed,
    i.e. a whole shard in memory beside its quantized copy. Only whole pages inside the tensor are
    released; any other tensor (a copy, CUDA, not Linux) is left alone. Returns whether pages were released."""
    if sys.platform != "linux" or tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or not _private_file_mapping(start, end, path):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(lo, hi - lo, _MADV_DONTNEED) == 0
