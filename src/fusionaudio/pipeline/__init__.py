"""The FusionAudio caption pipeline: multimodal cues -> LLM fusion -> CLAP filter -> QA.

``python -m fusionaudio.pipeline --config configs/pipeline/example.yaml``; see docs/pipeline.md.
"""

from fusionaudio.pipeline.config import STAGE_ORDER, load_config
from fusionaudio.pipeline.run import run_pipeline

__all__ = ["STAGE_ORDER", "load_config", "run_pipeline"]
