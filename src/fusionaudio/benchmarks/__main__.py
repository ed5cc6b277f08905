"""CLI: ``python -m fusionaudio.benchmarks build NAME --root DIR --out FILE`` / ``... list``."""

from __future__ import annotations

import argparse
import sys

from fusionaudio.benchmarks.builders import BUILDERS, build, write_records
from fusionaudio.commands import HelpFormatter, run_command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionaudio.benchmarks", description=__doc__,
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the benchmarks and the metadata each one reads")
    b = sub.add_parser("build", help="write evaluation records from a benchmark's metadata",
                       formatter_class=HelpFormatter)
    b.add_argument("name", choices=sorted(BUILDERS), help="the benchmark")
    b.add_argument("--root", required=True, help="the benchmark's folder, as downloaded")
    b.add_argument("--out", required=True, help="output .json (a list) or .jsonl")
    b.add_argument("--split", default=None, help="split where the benchmark has several (see list)")
    b.add_argument("--instruction", default=None, help="instruction for every record (default: the builder's)")
    b.add_argument("--relative", action="store_true", help="audio_id relative to --root")
    b.add_argument("--audio_pattern", default=None,
                   help="AudioCaps: file name pattern, fields {youtube_id} {start_time} {audiocap_id}")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in sorted(BUILDERS):
            print(f"{name}: {BUILDERS[name].describe}")
        return 0
    options = {k: v for k, v in (("split", args.split), ("instruction", args.instruction),
                                 ("audio_pattern", args.audio_pattern)) if v is not None}

    def run():
        records = build(args.name, args.root, relative=args.relative, **options)
        write_records(records, args.out)
        print(f"{args.name}: {len(records)} records -> {args.out}")

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
