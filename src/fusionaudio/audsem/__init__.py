"""AudSemThinker: Qwen2.5-Omni (thinker) answering in ``<think>`` / ``<semantic_elements>`` / ``<answer>`` sections.

* :class:`AudSemThinkerInference` - same interface as the GAMA inference class (``predict``, ``predict_batch``).
* :func:`detect_arch` - ``"gama"`` or ``"audsemthinker"`` from a checkpoint's ``config.json``.
* ``python -m fusionaudio.audsem.train`` - LoRA SFT with completion-only loss.
* ``python -m fusionaudio.audsem.tiny OUT`` - a tiny random checkpoint for tests and demos.

transformers is imported only when a model or processor is loaded.
"""

from fusionaudio.audsem.config import SYSTEM_PROMPT
from fusionaudio.audsem.model import AudSemThinkerInference, detect_arch, load_audio, load_thinker
from fusionaudio.audsem.processor import OmniAudioProcessor

__all__ = ["AudSemThinkerInference", "detect_arch", "load_thinker", "load_audio", "OmniAudioProcessor", "SYSTEM_PROMPT"]
