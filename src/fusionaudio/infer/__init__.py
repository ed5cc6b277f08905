"""Batch inference over a JSON / JSONL file of records: sharded, resumable, safe to kill.

Usage::

    # one process (CPU or one GPU)
    python -m fusionaudio.infer --json_input test.json --json_output preds.json \\
        --base_model BASE_DIR --model_path CHECKPOINT [--batch_size 8] [--do_sample False]
    # N local processes, one per GPU when there are N GPUs (else all on CPU)
    python -m fusionaudio.infer ... --num_workers N
    # or one process per GPU under torchrun
    torchrun --nproc_per_node N -m fusionaudio.infer ...
    # run one shard by hand (e.g. one per cluster job), then merge
    python -m fusionaudio.infer ... --shard 3/8
    python -m fusionaudio.infer merge --json_input test.json --json_output preds.json

Input: a JSON list (or JSONL) of records ``{audio_id, instruction, input?, output?, dataset?, task?, ...}``;
``audio_id`` is absolute or relative to the input file's folder, and ``"empty"``/``""``/``null`` mean text only.

Output (``json_output``; JSONL when it ends in ``.jsonl``, else a JSON list): every input record once, in
input order, unchanged (the ground truth ``output`` included) plus

* ``record_id``: ``"{index}-{hash}"``, the record's position in the input and a hash of its content;
* ``prediction``: the model's answer, or ``null`` when the record's audio could not be used;
* ``error``: ``null``, or the :class:`~fusionaudio.audio.AudioError` message (missing / corrupt / empty audio);
* ``audio_info``: what the front end saw (duration_s, channels, sample_rate, truncated, ...), ``null`` for
  text-only records and errors;
* ``structured`` (with ``--structured``): ``fusionaudio.structured.parse_structured(prediction)``.

Records with an ``error`` are also listed in ``<json_output>.errors.json``. Any failure while preparing one
record's audio (not only an ``AudioError``: a resampler's ``RuntimeError`` or ``MemoryError`` too), non-finite
features, and a prompt longer than the model's positions are that record's ``error``; the rest go on.

Pipeline: records are batched (audio / text only apart, similar prompt lengths together); ``--loader_workers``
processes (a ``torch.utils.data.DataLoader``) decode and resample the next batches while one generates; the
fbank of a batch is one ``fusionaudio.audio.fbank_batch`` call on the model's device. ``--num_workers`` is
something else: model worker processes, each a shard with its own model.

Compatibility with the original scripts: ``--answer_field output`` writes the answer into ``output``;
``--audio_root DIR`` / ``--path_map OLD=NEW`` remap audio paths; GAMA CompA-R records (``instruction_output``
lists) are read and written as ``gama_inf.py`` does (see :mod:`fusionaudio.infer.records`).

Work files (``--work_dir``, default ``<json_output>.parts/``): shard ``r`` of ``W`` takes the records whose
index ``i`` has ``i % W == r`` and appends one line per finished record to ``shard-{r}.jsonl``::

    {"record_id": "...", "index": 12, "run_id": "...", "rank": 0, "record": {<output record>}}

flushed and fsync'ed after every batch. A restarted run reads every ``shard-*.jsonl`` (an incomplete final
line, left by a kill, is ignored and cut off before that shard appends again), skips finished records, and
works only on the rest; so the world size may change between attempts. ``run_config.json`` holds the settings
that change predictions (model, dtype, generation options, ...); a restart with different settings is
refused rather than mixing results.
``<work_dir>/.lock`` and ``.<output name>.lock`` beside ``--json_output`` are held by each run (exclusively by
a whole run, shared by a shard or torchrun rank), so two runs on one output refuse each other, whatever their
``--work_dir``; ``--json_output`` equal to ``--json_input`` is refused; temporary files
left by a killed write are removed by the next run; an I/O error (disk full, ...) names the file. The merge (the parent process, rank 0 after a barrier, or the ``merge``
command) writes ``json_output`` only when every record is finished; otherwise it names the missing records
and exits with status 1.

Sampling: with ``--seed S`` each batch is seeded with ``S + index of its first record``; so with
``--batch_size 1`` a record's sample does not depend on sharding or restarts. Greedy decoding
(``--do_sample false``, ``--greedy`` or ``--temperature 0``) is deterministic.
"""

_LAZY = {
    "answerers": ("GEN_OPTIONS", "AudSemAnswerer", "GamaAnswerer", "generation_options", "load_answerer"),
    "cli": ("build_merge_parser", "build_parser", "main", "parse_shard", "resolve_arch"),
    "journal": ("CONFIG_NAME", "SHARD_GLOB", "ShardProgress", "ShardWriter", "check_settings", "default_work_dir",
                "errors_path", "read_all_shards", "read_shard", "complete_lines"),
    "records": ("OUTPUT_FIELDS", "InferError", "Item", "PathResolver", "load_input", "make_items", "output_record",
                "read_input", "record_id"),
    "runners": ("make_batches", "merge", "pending", "run_settings", "run_shard"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    """The package's names, imported on first use (``import fusionaudio.infer`` stays cheap)."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"fusionaudio.infer.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fusionaudio.infer' has no attribute {name!r}")
