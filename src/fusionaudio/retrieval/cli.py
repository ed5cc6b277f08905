"""``python -m fusionaudio.retrieval {evaluate,train}``.

    python -m fusionaudio.retrieval evaluate --arch ase --checkpoint FusionAudio-Retrieval.pt \\
        --text_model bert-base-uncased/ --input audiocaps_test.json --audio_root DATA_ROOT
    python -m fusionaudio.retrieval evaluate --arch clap --model_dir CLAP_DIR --input test.json
    python -m fusionaudio.retrieval train --train_json caps.json --model_dir CLAP_DIR --output_dir runs/ft

``--arch ase`` runs WavCaps' protocol (5 captions per clip, percentages, medR/meanR, the original's
mAP@10 definitions) and prints the metrics as the original prints them; ``--arch clap`` uses our
convention (fractions, DCASE mAP@10). Both write a JSON + Markdown report (default ``<input>.ret.json``).
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.commands import print_result, subcommands_main
from fusionaudio.evaluate.records import DEFAULT_REF_KEY
from fusionaudio.evaluate.report import default_output, make_result, write_report


def evaluate(input: str, arch: str = "clap", checkpoint: str = "", text_model: str = "", model_dir: str = "",
             output: str | None = None, audio_root: str = "", batch_size: int | None = None, device: str = "cpu",
             long_clips: str = "error", ref_key: str = DEFAULT_REF_KEY, group_key: str = "audio_id"):
    """Retrieval metrics of a model on caption records (or, for ``ase``, a WavCaps test json)."""
    if arch == "clap":
        from fusionaudio.retrieval.evaluate import evaluate_retrieval

        return evaluate_retrieval(input, model_dir, output, ref_key=ref_key, group_key=group_key, audio_root=audio_root,
                                  batch_size=batch_size or 16, device=device)["metrics"]
    if arch != "ase":
        raise ValueError(f"--arch must be 'ase' or 'clap'; got {arch!r}")
    if not checkpoint or not text_model:
        raise ValueError("--arch ase needs --checkpoint (the released .pt) and --text_model (local bert-base-uncased)")
    from fusionaudio.retrieval.ase import load_ase
    from fusionaudio.retrieval.wavcaps import evaluate_wavcaps, flat_metrics, format_metrics, read_clips

    paths, captions = read_clips(input, audio_root, ref_key, group_key)
    model = load_ase(checkpoint, text_model, device=device)
    metrics = evaluate_wavcaps(model, paths, captions, batch_size or 128, long_clips)
    meta = {"input": str(input), "n_audios": len(paths), "n_captions": len(captions), "model": str(checkpoint),
            "text_model": str(text_model), "protocol": "wavcaps", "batch_size": batch_size or 128,
            "long_clips": long_clips, "wavcaps": metrics, "units": "percent (r*, mAP10), ranks (medr, meanr)",
            "unused_checkpoint_keys": model.load_report["unused"]}
    write_report(make_result("retrieval", flat_metrics(metrics), meta), output or default_output(input, ".ret.json"))
    print(format_metrics(metrics, Path(input).stem))
    return None


def _brief(result):
    if isinstance(result, dict) and "steps" in result:  # a training log: print a summary only
        last = result["steps"][-1] if result["steps"] else {}
        return {"n_steps": len(result["steps"]), "final_loss": last.get("loss"), "val": result["val"]}
    return result


def main(argv=None) -> int:
    from fusionaudio.retrieval.clap_train import train

    return subcommands_main({"evaluate": evaluate, "train": train}, "python -m fusionaudio.retrieval", argv,
                            show=lambda r: print_result(_brief(r)))
