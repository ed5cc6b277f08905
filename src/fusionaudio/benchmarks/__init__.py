"""Evaluation records from each benchmark's own metadata.

``python -m fusionaudio.benchmarks build NAME --root DIR --out FILE`` reads the metadata a benchmark ships
(its CSV / JSON files, in the layout of the official download) under ``DIR`` and writes evaluation records
``{audio_id, instruction, input, output, dataset, task, ...}`` as the FusionAudio eval files hold them.
``audio_id`` is ``DIR`` joined with the file's path inside the download (relative when ``DIR`` is; with
``--relative`` the path inside the download only), so no absolute path is baked in.
``python -m fusionaudio.benchmarks list`` names the benchmarks and the files each one reads.
"""

from fusionaudio.benchmarks.builders import BUILDERS, BenchmarkError, build, write_records

__all__ = ["BUILDERS", "BenchmarkError", "build", "write_records"]
