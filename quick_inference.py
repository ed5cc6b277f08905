#!/usr/bin/env python3
"""FusionAudio quick inference: caption audio or answer questions about it.

    python quick_inference.py --base_model DIR --model_path CKPT --audio a.wav --question "..."

Also importable: ``from quick_inference import FusionAudioInference`` (imported on use, so ``--help``
does not load torch).
"""

import sys

__all__ = ["FusionAudioInference"]  # noqa: F822 - provided by __getattr__ below


def __getattr__(name):
    if name == "FusionAudioInference":
        from fusionaudio.gama.inference import FusionAudioInference

        return FusionAudioInference
    raise AttributeError(f"module 'quick_inference' has no attribute {name!r}")


if __name__ == "__main__":
    from fusionaudio.infer.quick import quick_inference_main

    sys.exit(quick_inference_main())
