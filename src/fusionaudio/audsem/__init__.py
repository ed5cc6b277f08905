"""AudSemThinker: Qwen2.5-Omni (thinker) answering in ``<think>`` / ``<semantic_elements>`` / ``<answer>`` sections.

The same file names as the GAMA family: ``config`` (prompts, defaults), ``processor`` (audio + chat
template), ``keymap`` (weight names as data), ``loading`` (the thinker, strictly), ``adapter`` (LoRA),
``inference`` (:class:`AudSemThinkerInference`: ``predict``, ``predict_batch``, ``generate``),
``export`` (merged export), ``tiny`` (test checkpoints), ``train`` (SFT, ``python -m fusionaudio.audsem.train``),
``grpo`` (GRPO on TRL, ``python -m fusionaudio.audsem.grpo``; with ``grpo_data``, ``grpo_trainer``, ``rewards``).

Names below are imported lazily: ``import fusionaudio.audsem`` does not import transformers.
"""

_LAZY = {
    "AudSemThinkerInference": "fusionaudio.audsem.inference",
    "load_thinker": "fusionaudio.audsem.loading",
    "load_audio": "fusionaudio.audsem.processor",
    "OmniAudioProcessor": "fusionaudio.audsem.processor",
    "SYSTEM_PROMPT": "fusionaudio.audsem.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusionaudio.audsem' has no attribute {name!r}")
