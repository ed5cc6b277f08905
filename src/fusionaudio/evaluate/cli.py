"""``fusionaudio evaluate <benchmark> ...``: one sub-command per evaluator (each also ``python -m
fusionaudio.evaluate.<name>``)."""

from __future__ import annotations

import importlib
import sys

EVALUATORS = {
    "classification": "fusionaudio.evaluate.classification",
    "captioning": "fusionaudio.evaluate.captioning",
    "qa": "fusionaudio.evaluate.qa",
    "mmau": "fusionaudio.evaluate.mmau",
    "report": "fusionaudio.evaluate.report",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in EVALUATORS:
        print(f"usage: fusionaudio evaluate {{{','.join(EVALUATORS)}}} [--help] [options]",
              file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return importlib.import_module(EVALUATORS[argv[0]]).main(argv[1:])
