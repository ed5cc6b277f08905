"""Retrieval evaluation of a dual encoder (CLAP by default) with our metric convention (DCASE mAP@10).

Captions are the ground-truth field ``output`` of records grouped by ``audio_id``; relative audio ids
resolve against ``--audio_root`` (default: the folder of the input file). The WavCaps protocol (the
released FusionAudio-Retrieval model) is ``fusionaudio.retrieval.wavcaps``.
"""

from __future__ import annotations

import numpy as np

from fusionaudio.evaluate.records import DEFAULT_REF_KEY, load_records
from fusionaudio.evaluate.report import default_output, make_result, write_report

from fusionaudio.retrieval.clap import ClapDualEncoder
from fusionaudio.retrieval.metrics import retrieval_metrics
from fusionaudio.retrieval.pairs import collect_pairs, resolve_audio_paths


def evaluate_retrieval(
    input: str,
    model_dir: str | None = None,
    output: str | None = None,
    ref_key: str = DEFAULT_REF_KEY,
    group_key: str = "audio_id",
    audio_root: str = "",
    batch_size: int = 16,
    device: str = "cpu",
    encoder=None,
) -> dict:
    """Encode captions and clips with a dual encoder (CLAP from ``model_dir`` by default) and score.

    Writes ``output`` (JSON, default ``<input>.ret.json``) and ``.md``.
    """
    records = load_records(input)
    audio_ids, captions, t2a = collect_pairs(records, input, ref_key, group_key)
    paths = resolve_audio_paths(audio_ids, audio_root, input)
    if encoder is None:
        if not model_dir:
            raise ValueError("evaluate_retrieval needs --model_dir (a local CLAP directory) or an encoder")
        encoder = ClapDualEncoder(model_dir, device=device, batch_size=batch_size)
    text_emb = np.asarray(encoder.encode_text(captions))
    audio_emb = np.asarray(encoder.encode_audio(paths))
    metrics = retrieval_metrics(text_emb @ audio_emb.T, t2a)
    meta = {"input": str(input), "n_records": len(records), "n_audios": len(audio_ids), "n_captions": len(captions),
            "model": str(model_dir or type(encoder).__name__), "ref_key": ref_key, "group_key": group_key,
            "protocol": "dcase"}
    result = make_result("retrieval", metrics, meta)
    write_report(result, output or default_output(input, ".ret.json"))
    return result
