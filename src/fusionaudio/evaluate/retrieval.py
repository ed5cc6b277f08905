"""Retrieval evaluation entry point; the implementation lives in ``fusionaudio.retrieval``.

    python -m fusionaudio.evaluate.retrieval --input test.json --model_dir CLAP_DIR --audio_root DATA_ROOT
    python -m fusionaudio.evaluate.retrieval --arch ase --checkpoint CKPT --text_model BERT_DIR --input test.json

(the same options as ``python -m fusionaudio.retrieval evaluate``).

Metric conventions: docs/retrieval.md (ours: DCASE mAP@10, fractions; WavCaps': percentages, quirks kept).
"""

from __future__ import annotations

from fusionaudio.retrieval.evaluate import evaluate_retrieval
from fusionaudio.retrieval.metrics import KS, query_metrics, ranked_relevance, retrieval_metrics, wavcaps_metrics
from fusionaudio.retrieval.pairs import collect_pairs, resolve_audio_paths

from .records import run_cli

__all__ = ["KS", "collect_pairs", "evaluate_retrieval", "query_metrics", "ranked_relevance", "resolve_audio_paths",
           "retrieval_metrics", "wavcaps_metrics"]


def main():
    import fire

    from fusionaudio.retrieval.cli import evaluate

    run_cli(lambda: fire.Fire(evaluate))


if __name__ == "__main__":
    main()
