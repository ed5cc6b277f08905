"""The front door over the model families: ``create_inference`` picks GAMA or AudSemThinker by the directory.

Both inference classes have the same public core (``predict``, ``predict_batch``, ``generate``), which
every driver (quick_inference, infer, serve, the web demo, the pipeline) calls.
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.loading.files import read_json_object, refuse_remote_code

OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")


def read_config_json(path) -> dict:
    """``config.json`` of a model directory, checked (JSON object, no remote code)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: no config.json (expected a model directory)")
    config = read_json_object(cfg_file)
    refuse_remote_code(config, cfg_file)
    return config


def detect_arch(base_model_path) -> str:
    """``"audsemthinker"`` for a Qwen2.5-Omni (or thinker-only) directory, ``"gama"`` for a Llama one.

    Knows every layout this project writes: ``fusionaudio_config.json`` (the bundled demo model,
    ``fusionaudio convert`` output, GAMA training output) is GAMA; a ``config.json`` (reference base
    directories, ``fusionaudio export`` output, Qwen2.5-Omni checkpoints) is read for ``model_type``; a
    peft adapter directory (``fusionaudio.audsem.train`` output) follows its ``base_model_name_or_path``
    when that is a local directory. Anything else is a ``ValueError`` naming the directory.
    """
    path = Path(base_model_path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found")
    if (path / "fusionaudio_config.json").is_file():
        return "gama"
    if (path / "config.json").is_file():
        model_type = read_config_json(path).get("model_type")
        if model_type in OMNI_TYPES:
            return "audsemthinker"
        if model_type == "llama":
            return "gama"
        raise ValueError(
            f"{path / 'config.json'}: model_type {model_type!r} is neither a Qwen2.5-Omni "
            f"({', '.join(OMNI_TYPES)}) nor a Llama (GAMA) checkpoint"
        )
    if (path / "adapter_config.json").is_file():
        base = read_json_object(path / "adapter_config.json").get("base_model_name_or_path")
        if isinstance(base, str) and base and Path(base).is_dir() and Path(base).resolve() != path.resolve():
            return detect_arch(base)
        raise ValueError(f"{path}: a LoRA adapter directory, not a base model; pass it as --model_path and its "
                         f"base model as --base_model (or pass --arch)")
    raise ValueError(f"{path}: no config.json, fusionaudio_config.json or adapter_config.json; "
                     "cannot tell the architecture (pass --arch)")


def create_inference(arch: str = "auto", base_model_path=None, model_path=None, device="cpu", dtype="float32",
                     resampler: str = "sinc", attention: str = "sdpa", check_values: bool = True,
                     quantize: str | None = None, engine: str = "hf", engine_options: dict | None = None):
    """An inference object for either model family (``gama`` or ``audsemthinker``); ``resampler``:
    see :func:`fusionaudio.audio.resample` (``sinc``, the reference's, by default for both);
    ``check_values=False`` skips the NaN/inf/dtype check of the GAMA weights on load; ``quantize``
    (``none``, ``int8``, ``nf4``): the language model in 8 / 4 bits (:mod:`fusionaudio.loading.quantize`).
    ``engine="vllm"`` (GAMA): vLLM serves the Llama (:class:`fusionaudio.gama.vllm_engine.VllmGamaInference`,
    which takes ``engine_options``: ``serving``, ``vllm_args``, ``cache_dir``, ``lora``)."""
    if arch == "auto":
        arch = "gama"
        if base_model_path is not None:
            arch = detect_arch(base_model_path)
    if engine != "hf":
        from fusionaudio.gama.vllm_options import check_engine

        check_engine(engine, arch)
        if quantize not in (None, "none"):
            raise ValueError(f"--quantize {quantize} applies to --engine hf (bitsandbytes); with --engine {engine} "
                             "give vLLM its own quantization through --vllm_args")
        from fusionaudio.gama.vllm_engine import VllmGamaInference

        return VllmGamaInference(base_model_path, model_path, device=device, dtype=dtype, resampler=resampler,
                                 attention=attention, check_values=check_values, **(engine_options or {}))
    if arch == "gama":
        from fusionaudio.gama.inference import FusionAudioInference

        return FusionAudioInference(base_model_path, model_path, device=device, dtype=dtype, resampler=resampler,
                                    attention=attention, check_values=check_values, quantize=quantize)
    if arch == "audsemthinker":
        if base_model_path is None:
            raise ValueError("--arch audsemthinker needs --base_model (a local Qwen2.5-Omni directory)")
        from fusionaudio.audsem.inference import AudSemThinkerInference

        return AudSemThinkerInference(base_model_path, model_path, device=device, dtype=dtype, resampler=resampler,
                                      quantize=quantize)
    raise ValueError(f"unknown arch {arch!r}: use auto, gama or audsemthinker")


def export_model(base_model, output, model_path=None, merge: bool = False, dtype=None) -> str:
    """``fusionaudio export`` for either family: GAMA merged into the reference layout (or ``convert``'s
    layout without ``merge``); AudSemThinker merged into the released layout (``merge`` only)."""
    if detect_arch(base_model) == "audsemthinker":
        if not merge:
            raise ValueError(f"{base_model}: an AudSemThinker model; export it with --merge (convert is GAMA-only)")
        from fusionaudio.audsem.export import export_merged

        return str(export_merged(base_model, model_path, output, dtype=dtype))
    from fusionaudio.gama.export import export

    return export(base_model, output, model_path, merge, dtype)
