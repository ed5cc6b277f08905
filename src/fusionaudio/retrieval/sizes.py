"""The retrieval models' directories as untrusted input: named files stay inside, config sizes fit the weights.

* ASE: the BERT ``config.json`` of the text-model directory against the checkpoint's BERT tensors, and the
  checkpoint's ``audio_args`` against the audio front end's bounds;
* CLAP: the ``ClapModel`` directory's config against its weight files (headers only), and the file names
  its tokenizer / processor configs and shard index give.

Both run before ``transformers`` builds or reads anything. See :mod:`fusionaudio.loading.sizes`.
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.loading.files import check_named_files, read_json_file
from fusionaudio.loading.sizes import MAX_POSITIONS, SizeCheck, flatten, tensor_shapes
from fusionaudio.loading.weights import check_weight_indexes

#: Sample rates a checkpoint's ``audio_args.sr`` may give (those the audio front end accepts).
SAMPLE_RATES = (1_000, 768_000)
#: The largest CLAP spectrogram image side (``audio_config.spec_size``; HTS-AT uses 256).
MAX_SPEC_SIZE = 4096
_CONFIGS = ("tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def check_named_config_files(directory) -> None:
    """The file names a tokenizer / processor config in ``directory`` gives must stay inside it."""
    directory = Path(directory)
    for name in _CONFIGS:
        path = directory / name
        if path.is_file() or path.is_symlink():
            check_named_files(read_json_file(path, name), directory, path)


def bert_problems(c: SizeCheck, prefix: str, field: str = "") -> None:
    """A BERT/RoBERTa text encoder's sizes against its tensors ``{prefix}embeddings.*`` / ``encoder.layer.N``."""
    c.layers(field + "num_hidden_layers", prefix + "encoder.layer.")
    c.dim(field + "vocab_size", prefix + "embeddings.word_embeddings.weight", 0)
    c.dim(field + "hidden_size", prefix + "embeddings.word_embeddings.weight", 1)
    c.dim(field + "max_position_embeddings", prefix + "embeddings.position_embeddings.weight", 0)
    c.dim(field + "type_vocab_size", prefix + "embeddings.token_type_embeddings.weight", 0)
    c.dim(field + "intermediate_size", prefix + "encoder.layer.0.intermediate.dense.weight", 0)
    c.divides(field + "num_attention_heads", field + "hidden_size")
    c.bound(field + "max_position_embeddings", 1, MAX_POSITIONS)


def check_ase_sizes(text_model_dir, state: dict, yaml_config: dict | None) -> None:
    """The text-model directory's BERT config against the ASE checkpoint's text tensors; ``audio_args``
    against the front end's bounds. One :class:`CheckpointError` naming every disagreeing field."""
    directory = Path(text_model_dir)
    check_named_config_files(directory)
    cfg_file = directory / "config.json"
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    c = SizeCheck(cfg_file, flatten(read_json_file(cfg_file, "text model config")), shapes)
    bert_problems(c, "text_encoder.text_encoder.")
    args = (yaml_config or {}).get("audio_args")
    if isinstance(args, dict):
        audio = SizeCheck("the checkpoint's config", {f"audio_args.{k}": v for k, v in args.items()}, {})
        audio.bound("audio_args.sr", *SAMPLE_RATES)
        audio.bound("audio_args.hop_length", 1, SAMPLE_RATES[1])
        c.problems += audio.problems
    c.raise_problems()


def _clap_audio(c: SizeCheck, config: dict) -> None:
    a, enc = "audio_config.", "audio_model.audio_encoder."
    depths = config.get(a + "depths")
    if depths is not None:
        if not (isinstance(depths, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in depths)):
            c.problems.append(f"{a}depths must be a list of integers, got {depths!r}")
        else:
            c.layers(a + "depths (number of stages)", enc + "layers.", value=len(depths))
            for i, depth in enumerate(depths):
                c.layers(f"{a}depths[{i}]", f"{enc}layers.{i}.blocks.", value=depth)
    c.dim(a + "patch_embeds_hidden_size", enc + "patch_embed.proj.weight", 0)
    c.dim(a + "patch_size", enc + "patch_embed.proj.weight", 2)
    c.dim(a + "num_mel_bins", enc + "batch_norm.weight", 0)
    c.bound(a + "spec_size", 1, MAX_SPEC_SIZE)
    c.bound(a + "window_size", 1, MAX_SPEC_SIZE)


def clap_weight_files(directory: Path) -> list[Path]:
    shards = check_weight_indexes(directory)
    return shards or [p for p in (directory / "model.safetensors", directory / "pytorch_model.bin")
                      if p.is_file() or p.is_symlink()][:1]


def check_clap_dir(model_dir) -> None:
    """A CLAP directory before ``ClapModel``/``ClapProcessor.from_pretrained`` read it: every file name it
    gives stays inside it, and its config's sizes fit its weights (one error naming every field)."""
    directory = Path(model_dir)
    check_named_config_files(directory)
    files = clap_weight_files(directory)
    if not files:
        return  # transformers says which weight file is missing
    cfg_file = directory / "config.json"
    c = SizeCheck(cfg_file, flatten(read_json_file(cfg_file, "CLAP config")), tensor_shapes(files))
    bert_problems(c, "text_model.", "text_config.")
    _clap_audio(c, c.config)
    c.dim("projection_dim", "text_projection.linear1.weight", 0)
    c.dim("projection_dim", "audio_projection.linear1.weight", 0)
    c.raise_problems()
