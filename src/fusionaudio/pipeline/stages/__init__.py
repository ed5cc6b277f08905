"""The pipeline's stages, one small class each (see docs/pipeline.md)."""

from fusionaudio.pipeline.stages.asr import AsrStage
from fusionaudio.pipeline.stages.audio_text import AudioCaptionStage, MusicCaptionStage
from fusionaudio.pipeline.stages.clap_filter import ClapFilterStage
from fusionaudio.pipeline.stages.fusion import FusionStage
from fusionaudio.pipeline.stages.prepare import PrepareStage
from fusionaudio.pipeline.stages.qa import QAStage
from fusionaudio.pipeline.stages.separation import SeparationStage
from fusionaudio.pipeline.stages.tagging import TaggingStage
from fusionaudio.pipeline.stages.visual_caption import VisualCaptionStage

STAGE_CLASSES = {cls.name: cls for cls in (PrepareStage, SeparationStage, AsrStage, TaggingStage, AudioCaptionStage,
                                           MusicCaptionStage, VisualCaptionStage, FusionStage, ClapFilterStage,
                                           QAStage)}
