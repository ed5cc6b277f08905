"""Moved to ``fusionaudio.retrieval`` (kept so ``python -m fusionaudio.retrieval_model train|evaluate`` works).

Use ``python -m fusionaudio.retrieval train|evaluate`` (``--arch clap`` is the default for evaluate).
"""

from fusionaudio.retrieval.clap import ClapDualEncoder, load_waveform
from fusionaudio.retrieval.clap_train import caption_pairs, train, unique_audio_batches
from fusionaudio.retrieval.cli import evaluate, main

__all__ = ["ClapDualEncoder", "caption_pairs", "evaluate", "load_waveform", "main", "train", "unique_audio_batches"]

if __name__ == "__main__":
    main()
