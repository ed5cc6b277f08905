"""The pipeline's stages, one small class each (see docs/pipeline.md)."""

from .asr import AsrStage
from .audio_text import AudioCaptionStage, MusicCaptionStage
from .clap_filter import ClapFilterStage
from .fusion import FusionStage
from .prepare import PrepareStage
from .qa import QAStage
from .separation import SeparationStage
from .tagging import TaggingStage
from .visual_caption import VisualCaptionStage

STAGE_CLASSES = {cls.name: cls for cls in (PrepareStage, SeparationStage, AsrStage, TaggingStage, AudioCaptionStage,
                                           MusicCaptionStage, VisualCaptionStage, FusionStage, ClapFilterStage,
                                           QAStage)}
