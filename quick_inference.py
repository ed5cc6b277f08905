#!/usr/bin/env python3
"""FusionAudio quick inference: caption audio or answer questions about it.

    python quick_inference.py --base_model DIR --model_path CKPT --audio a.wav --question "..."

Also importable: ``from quick_inference import FusionAudioInference``.
"""

import sys

from fusionaudio.cli import quick_inference_main
from fusionaudio.inference import FusionAudioInference

__all__ = ["FusionAudioInference"]

if __name__ == "__main__":
    sys.exit(quick_inference_main())
