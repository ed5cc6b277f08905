"""fusionaudio.loading.quantize: the ``quantize`` names, and handing a memory-mapped weight's pages back once
its quantized copy exists (what keeps a quantized load from holding a whole shard in memory)."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import save_file

from fusionaudio.errors import UsageError
from fusionaudio.loading.quantize import check_quantize, release_file_pages
from fusionaudio.loading.weights import load_state_file

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pages are released on Linux only")


def _resident_kib(tensor: torch.Tensor) -> int:
    """Resident KiB of the mapping that holds ``tensor`` (/proc/self/smaps)."""
    ptr, inside = tensor.data_ptr(), False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= ptr < hi
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise AssertionError("no mapping holds the tensor")


def test_quantize_names():
    assert [check_quantize(v) for v in (None, "none", "int8", "nf4")] == [None, None, "int8", "nf4"]
    with pytest.raises(UsageError, match="one of none, int8, nf4, got 'fp4'"):
        check_quantize("fp4")


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_pages_of_a_mapped_weight_are_released_and_read_again(tmp_path, suffix):
    weights = {"a": torch.randn(1024, 1024), "b": torch.randn(512, 1024)}
    path = tmp_path / f"w{suffix}"
    save_file(weights, str(path)) if suffix == ".safetensors" else torch.save(weights, path)
    state = load_state_file(path)
    assert torch.equal(state["a"], weights["a"])  # every page of "a" read: resident
    before = _resident_kib(state["a"])
    assert before >= 4096
    assert release_file_pages(state["a"], path)
    assert _resident_kib(state["a"]) <= before - 4096 + 8  # all but the partial pages at its two ends
    assert torch.equal(state["a"], weights["a"]) and torch.equal(state["b"], weights["b"])  # read from the file again


def test_other_tensors_are_left_alone(tmp_path):
    t = torch.randn(1024, 1024)
    copy = t.clone()
    assert not release_file_pages(t, tmp_path / "w.safetensors")  # not a file mapping
    path = tmp_path / "w.safetensors"
    save_file({"a": copy}, str(path))
    other = tmp_path / "other.safetensors"
    save_file({"a": copy}, str(other))
    assert not release_file_pages(load_state_file(path)["a"], other)  # mapped from another file
    assert torch.equal(t, copy)


def test_training_switches_the_packed_cpu_kernel_off_and_inference_back_on():
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import has_avx512bf16

    from fusionaudio.loading.quantize import pack_for_cpu_inference, prepare_for_training, quantized_linear

    torch.manual_seed(0)
    model = torch.nn.Sequential(quantized_linear(torch.randn(128, 128), "nf4", torch.float32, "cpu"))
    layer = model[0]
    x = torch.randn(3, 128)

    def packed():
        return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))

    pack_for_cpu_inference(model)
    assert layer.support_avx512bf16_for_cpu == packed() == has_avx512bf16()
    with torch.no_grad():
        first = layer(x)
    prepare_for_training(model)
    assert not layer.support_avx512bf16_for_cpu and not packed()
    pack_for_cpu_inference(model)
    assert packed() == has_avx512bf16()
    with torch.no_grad():  # not bit-equal: unpacking re-quantizes the bf16 block scales
        again = layer(x)
    assert float((again - first).norm() / first.norm()) < 0.01
