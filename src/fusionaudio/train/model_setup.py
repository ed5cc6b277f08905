"""Stage 2 of training: the model. Where training starts (base directory or a previous
checkpoint), LoRA or none, which parameters train, and the module the engine wraps."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fusionaudio.gama.config import LoraSettings
from fusionaudio.gama.checkpoints import TRAINING_ARGS, recorded_base_dir
from fusionaudio.gama.keymap import local_to_reference
from fusionaudio.gama.loading import finetuned_config, load_base, load_finetuned, load_tokenizer, read_config
from fusionaudio.gama.tokenizer import check_vocab_size
from fusionaudio.loading.quantize import check_quantize, prepare_for_training

log = logging.getLogger("fusionaudio.train")

WEIGHTS_NAME = "adapter_model.safetensors"  # trained tensors only; load_finetuned finds it in a folder
ARGS_NAME = TRAINING_ARGS

_AGGREGATOR_SIDE = ("audio_aggregator_layer_1", "audio_aggregator_layer_2", "audio_proj_qformer",
                    "audio_proj_audioenc", "audio_proj_norm_qformer", "audio_proj_norm_audioenc")
#: Substrings of the reference's parameter names that each mode trains (DESIGN.md section 2).
TRAINABLE_RULES = {
    "all": ("audio",),
    "proj": ("audio_proj",),
    "qformer": _AGGREGATOR_SIDE,
    "qformer_all": _AGGREGATOR_SIDE + ("audio_encoder", "Qformer", "query_tokens", "qformer_proj_norm"),
    "full": ("",),
    "full_frozen_encoder": ("",),
}
#: Substrings a mode leaves frozen although a rule above matches them. ``full_frozen_encoder``
#: trains everything but the CAV-MAE encoder: the demo recipe's stage with a pre-trained
#: encoder and a random Llama (the Llama's first gradients are noise, and they erase what a
#: trainable encoder knows before the Llama learns to read it; docs/demo_model.md).
TRAINABLE_EXCLUDES = {"full_frozen_encoder": ("audio_encoder",)}
#: ``--lora_target_modules`` values that mean "no LoRA". ``dummy`` is how the reference's
#: stage-1 script asks for it (its peft matched no module named so).
NO_LORA_TARGETS = ({"none"}, {"dummy"}, set())


def parse_targets(value) -> list[str]:
    """``'[q_proj,v_proj]'``, ``"['dummy']"``, a list or a tuple -> module names."""
    if isinstance(value, str):
        return [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",") if v.strip().strip("'\"")]
    return [str(v) for v in value]


def lora_settings(r: int, alpha: int, dropout: float, target_modules) -> LoraSettings | None:
    """The run's LoRA, or None for no LoRA (targets ``[]``, ``none`` or the reference's ``['dummy']``)."""
    targets = parse_targets(target_modules)
    if {t.lower() for t in targets} in NO_LORA_TARGETS:
        return None
    return LoraSettings(r=r, alpha=alpha, dropout=dropout, target_modules=targets)


# -- parameters --------------------------------------------------------------------------
def trainable_names(model, mode: str) -> list[str]:
    """Names of the parameters ``mode`` trains: LoRA always, plus those whose reference name
    contains one of ``TRAINABLE_RULES[mode]`` and none of ``TRAINABLE_EXCLUDES[mode]``
    (``full``: everything)."""
    if mode not in TRAINABLE_RULES:
        raise ValueError(f"trainable_params must be one of {sorted(TRAINABLE_RULES)}, got {mode!r}")
    keys, excludes = TRAINABLE_RULES[mode], TRAINABLE_EXCLUDES.get(mode, ())

    def trained(ref: str) -> bool:
        return any(k in ref for k in keys) and not any(x in ref for x in excludes)

    return [n for n, _ in model.named_parameters() if ".lora_" in n or trained(local_to_reference(n))]


def set_trainable(model, mode: str) -> list[str]:
    """Freeze everything but ``trainable_names(model, mode)``; returns those names."""
    names = set(trainable_names(model, mode))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return [n for n, _ in model.named_parameters() if n in names]


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of the Llama layers, non-reentrant (so LoRA gets
    gradients even when the input embeddings need none)."""
    llm = model.llm
    if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.x
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# -- where training starts -------------------------------------------------------------------
def _is_checkpoint(path: Path) -> bool:
    return path.is_file() or (path / ARGS_NAME).is_file() or (path / WEIGHTS_NAME).is_file()


def resolve_start(base_model: str, base_dir: str | None = None) -> tuple[Path, Path | None]:
    """(base directory, fine-tuned checkpoint to start from or None) for ``--base_model``."""
    path = Path(base_model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"base_model not found: {path}")
    if not _is_checkpoint(path):
        return path, None
    if base_dir is None:
        return recorded_base_dir(path, flag="--base_dir"), path
    return Path(base_dir).expanduser(), path


def _set_dropout(model, dropout: float) -> None:
    for name, module in model.named_modules():  # peft uses Identity for dropout 0
        if name.endswith(".lora_dropout"):
            module["default"] = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()


def tokenizer_of(base_dir):
    """The base directory's tokenizer (the one place training loads it)."""
    return load_tokenizer(base_dir)


def build_model(base_dir, lora: LoraSettings | None, device, dtype=torch.float32, start_checkpoint=None,
                tokenizer=None, quantize: str | None = None):
    """``(model, tokenizer)``: the base model with LoRA ``lora`` (None: no LoRA), optionally
    a fine-tuned checkpoint on top; ``tokenizer``: one already loaded (default: the base's).

    A base folder written by this project that already holds LoRA weights keeps them; its
    LoRA shape (r, alpha, target modules) must then match ``lora`` (dropout may differ).
    A start checkpoint trained without LoRA (its ``fusionaudio_config.json`` says
    ``"lora": null``, as GAMA's stage 1 writes) is loaded first, then a fresh LoRA is
    injected: how GAMA's stage 2 starts from stage 1. ``quantize`` (``int8``, ``nf4``): the Llama's linear
    layers frozen in 8 / 4 bits (QLoRA), LoRA over them unmerged."""
    quantize = check_quantize(quantize)
    config, layout = read_config(Path(base_dir))
    start_cfg = finetuned_config(start_checkpoint) if start_checkpoint is not None else None
    start_without_lora = start_cfg is not None and start_cfg.lora is None
    if start_cfg is not None and start_cfg.lora is not None and lora is None:
        raise ValueError(f"{start_checkpoint} was trained with LoRA; a run without LoRA cannot start from it "
                         f"(merge it first with `fusionaudio convert`, then start from that directory)")
    if layout == "local" and config.lora is not None:
        if lora is None:
            raise ValueError(f"{base_dir} holds LoRA weights; a run without LoRA cannot start from it "
                             f"(merge them first with `fusionaudio convert`)")
        model = load_base(base_dir, device=device, dtype=dtype, lora=True, quantize=quantize)
        have = (config.lora.r, config.lora.alpha, sorted(config.lora.target_modules))
        if have != (lora.r, lora.alpha, sorted(lora.target_modules)):
            raise ValueError(f"{base_dir} already holds LoRA weights with r={have[0]}, alpha={have[1]}, "
                             f"targets={have[2]}: pass the same --lora_r/--lora_alpha/--lora_target_modules")
        _set_dropout(model, lora.dropout)
        model.config.lora = lora
    else:
        model = load_base(base_dir, device=device, dtype=dtype, lora=False, quantize=quantize)
        model.config.lora = None
        if start_without_lora:
            load_finetuned(model, start_checkpoint)
        if lora is not None:
            model.enable_lora(lora)
        model.to(device)
    if start_checkpoint is not None and not start_without_lora:
        load_finetuned(model, start_checkpoint)
    if quantize:
        prepare_for_training(model)
    tokenizer = tokenizer if tokenizer is not None else tokenizer_of(base_dir)
    check_vocab_size(tokenizer, model.llm.get_input_embeddings().weight.shape[0], base_dir)
    return model, tokenizer


class TrainingForward(torch.nn.Module):
    """What the engine wraps (DDP / FSDP / DeepSpeed): one forward from fbanks and token ids
    to the loss, so every parameter is used inside the wrapped call. Each distinct clip of
    the micro-batch is encoded, and run through the Llama as the audio prefix, once
    (``index`` maps each example to its clip's row; see ``GamaForCausalLM.forward``)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, fbank=None, index=None):
        return self.model(input_ids, audio_input=fbank, attention_mask=attention_mask, labels=labels,
                          audio_index=None if fbank is None else index)
