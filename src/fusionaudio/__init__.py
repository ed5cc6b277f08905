"""FusionAudio / GAMA audio-language models on stock transformers + peft.

Public entry points are imported lazily so that ``import fusionaudio`` stays cheap.
"""

__version__ = "0.1.0"

from fusionaudio.loading.quantize import quiet_bitsandbytes as _quiet_bitsandbytes  # noqa: E402 - no torch import

_quiet_bitsandbytes()  # before peft imports bitsandbytes (if installed): see fusionaudio.loading.quantize

_LAZY = {
    "load_model": "fusionaudio.gama.loading",
    "load_tokenizer": "fusionaudio.gama.tokenizer",
    "GamaConfig": "fusionaudio.gama.config",
    "GamaForCausalLM": "fusionaudio.gama.modeling",
    "FusionAudioInference": "fusionaudio.gama.inference",
    "create_inference": "fusionaudio.inference",
    "load_fbank": "fusionaudio.audio",
    "waveform_to_fbank": "fusionaudio.audio",
    "AudioError": "fusionaudio.audio",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusionaudio' has no attribute {name!r}")
