"""What ``--engine vllm`` accepts, without importing torch or vLLM: the engine names, the install check
(one line saying how to install vLLM) and the one-to-one mapping of our sampling options onto vLLM's
``SamplingParams`` (what vLLM cannot do the same way is refused by name)."""

from __future__ import annotations

import importlib.util
import sys

from fusionaudio.errors import UsageError

ENGINES = ("hf", "vllm")
#: How a fine-tuned LoRA reaches vLLM: folded into the weights, or a ``LoRARequest`` (see vllm_engine).
LORA_MODES = ("merge", "adapter")
INSTALL_HINT = ("--engine vllm needs vLLM, which is not installed for {python}: on a GPU machine "
                "`pip install 'fusionaudio[vllm]'`; on a CPU machine `make vllm-env`, then run with "
                ".venv-vllm/bin/python (or use --engine hf)")
#: LoRA ranks vLLM accepts as ``max_lora_rank``.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def require_vllm() -> None:
    """Raise a one-line :class:`UsageError` saying how to install vLLM when it is not importable."""
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(INSTALL_HINT.format(python=sys.executable))


def check_engine(engine: str, arch: str = "gama") -> None:
    """Refuse an unknown engine name, and ``vllm`` for a family it does not serve."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "vllm" and arch == "audsemthinker":
        raise UsageError(f"--engine vllm serves GAMA / FusionAudio models; {arch} runs with --engine hf")


def refuse_unsupported(opts: dict) -> None:
    """Refuse, by name, the options vLLM cannot honour as ``--engine hf`` does."""
    if opts.get("num_beams", 1) != 1:
        raise UsageError(f"num_beams={opts['num_beams']} (beam search) is not available with --engine vllm; "
                         "use --engine hf")
    if opts.get("repetition_penalty") not in (None, 1.0):
        raise UsageError("repetition_penalty is not available with --engine vllm (the prompt reaches vLLM as "
                         "embeddings, so its tokens could not be penalised as --engine hf does); use --engine hf")


def vllm_sampling_params(opts: dict, eos_token_id: int, seed: int | None = None):
    """vLLM ``SamplingParams`` for options made by :func:`fusionaudio.sampling.sampling_options`, one to one:
    greedy -> ``temperature 0``; sampling -> ``temperature`` / ``top_p`` / ``top_k`` (0 = no top-k in both);
    ``max_new_tokens`` -> ``max_tokens``; ``min_new_tokens`` -> ``min_tokens``; generation stops at EOS.

    Refused by name: beam search (``num_beams`` > 1) and ``repetition_penalty`` (vLLM penalises the prompt
    tokens it sees, and this engine's prompt reaches it as embeddings, so it could not match ``--engine hf``).
    """
    from vllm import SamplingParams

    refuse_unsupported(opts)
    kwargs = dict(max_tokens=int(opts["max_new_tokens"]), min_tokens=int(opts.get("min_new_tokens") or 0),
                  stop_token_ids=[int(eos_token_id)], detokenize=False, seed=seed)
    if opts["do_sample"]:
        kwargs.update(temperature=float(opts.get("temperature", 1.0)), top_p=float(opts.get("top_p", 1.0)),
                      top_k=int(opts.get("top_k", 0)))
    else:
        kwargs["temperature"] = 0.0
    return SamplingParams(**kwargs)
