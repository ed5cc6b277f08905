"""Audio-text retrieval models and their evaluation.

* ``ase`` -- the WavCaps "ASE" model (HTS-AT + BERT; the released FusionAudio-Retrieval checkpoint):
  ``load_ase(checkpoint, text_model_dir)``; ``frontend`` its audio front end, ``keymap`` the strict map
  from the released layout, ``wavcaps`` the original evaluation protocol;
* ``clap`` -- a CLAP dual encoder from a local directory; ``clap_train`` fine-tunes it;
* ``metrics`` -- ``retrieval_metrics`` (ours, DCASE mAP) and ``wavcaps_metrics`` (the original's);
* ``evaluate`` -- evaluation of any dual encoder with our convention.

CLI: ``python -m fusionaudio.retrieval {evaluate,train}`` (docs/retrieval.md).
"""

from fusionaudio.retrieval.metrics import retrieval_metrics, wavcaps_metrics


def load_ase(checkpoint, text_model_dir, device: str = "cpu"):
    """See ``fusionaudio.retrieval.ase.load_ase`` (imported lazily: it needs torch + transformers)."""
    from fusionaudio.retrieval.ase import load_ase as _load

    return _load(checkpoint, text_model_dir, device=device)


__all__ = ["load_ase", "retrieval_metrics", "wavcaps_metrics"]
