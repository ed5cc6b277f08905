"""AudSemThinker inference: a local Qwen2.5-Omni *thinker* (text out, no talker) on stock transformers.

Loading accepts either a full Qwen2.5-Omni checkpoint directory (``config.json`` of model type
``qwen2_5_omni``, weights prefixed ``thinker.`` beside ``talker.`` / ``token2wav.``, which are skipped)
or a thinker-only directory (model type ``qwen2_5_omni_thinker``). Every thinker weight must be found
in the checkpoint; any unexpected weight other than the talker's / token2wav's is an error.

The prompt is the model's chat template applied to ``[system, user: [audio, instruction]]`` with the
AudSemThinker system prompt; audio is decoded with :mod:`fusionaudio.audio`, down-mixed to mono and
resampled to the feature extractor's rate (16 kHz).
"""

from __future__ import annotations

from typing import Sequence

import torch

from fusionaudio.audsem.adapter import apply_adapter
from fusionaudio.audsem.config import DEFAULT_PROMPT_MODE, GENERATION_DEFAULTS, SYSTEM_PROMPT, build_instruction
from fusionaudio.audsem.loading import load_thinker
from fusionaudio.audsem.processor import OmniAudioProcessor, build_conversation, check_resampler, load_audio
from fusionaudio.loading.quantize import check_quantize, pack_for_cpu_inference
from fusionaudio.loading.weights import resolve_dtype
from fusionaudio.records import TEXT_ONLY
from fusionaudio.sampling import sampling_options



class AudSemThinkerInference:
    """Generate AudSemThinker answers (``<think>``, ``<semantic_elements>``, ``<answer>``) for audio files.

    Args:
        base_model_path: local Qwen2.5-Omni directory (full Omni or thinker-only) with tokenizer,
            ``preprocessor_config.json`` and a chat template (e.g. a download of ``gijs/audsemthinker``).
        model_path: optional LoRA adapter directory (peft, e.g. written by ``fusionaudio.audsem.train``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: torch dtype or its name (``"bfloat16"`` on GPU halves memory; CPU wants float32).
        prompt_mode: ``"caption"`` (default; the structured captioning instruction, with
            ``" Question: ..."`` appended), ``"qa"`` (question-answering prefix + question) or ``"raw"``
            (the question alone), see :func:`fusionaudio.structured.build_instruction`.
        system_prompt: the system message (default: the one AudSemThinker was trained with).
        processor_path: where the tokenizer / feature extractor / template live (default: base_model_path).
        resampler: method passed to :func:`fusionaudio.audio.resample`: ``"sinc"`` (default; matches the
            model card's ``torchaudio.transforms.Resample``), ``"soxr"`` or ``"librosa"`` (upstream's
            evaluation scripts).
        quantize: ``"int8"`` / ``"nf4"``: the thinker's language model in 8 / 4 bits (bitsandbytes), the audio
            tower in ``dtype``; a LoRA adapter stays unmerged.
    """

    arch = "audsemthinker"

    def __init__(self, base_model_path, model_path=None, device="cpu", dtype=torch.float32, *,
                 prompt_mode: str = DEFAULT_PROMPT_MODE, system_prompt: str = SYSTEM_PROMPT,
                 processor_path=None, resampler: str = "sinc", quantize: str | None = None):
        build_instruction("probe", prompt_mode)  # validates the mode early
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.prompt_mode = prompt_mode
        self.system_prompt = system_prompt
        self.resampler = check_resampler(resampler)
        self.base_model_path, self.model_path = str(base_model_path), None if model_path is None else str(model_path)
        self.processor = OmniAudioProcessor.from_pretrained(processor_path or base_model_path)
        model = load_thinker(base_model_path, dtype=self.dtype, device=self.device, quantize=quantize)
        if model_path is not None:
            model = apply_adapter(model, model_path)
        self.model = model.eval()
        if check_quantize(quantize):
            pack_for_cpu_inference(self.model)

    # ----------------------------------------------------------------------------------- prompting
    def instruction(self, question: str | None) -> str:
        """The user-turn text sent for ``question`` under this instance's prompt mode."""
        return build_instruction(question, self.prompt_mode)

    def prompt(self, question: str | None, has_audio: bool) -> str:
        """The chat-template text sent for ``question`` (with an audio placeholder when ``has_audio``)."""
        messages = build_conversation(self.instruction(question), has_audio, self.system_prompt)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def generation_kwargs(self, greedy: bool = False, **gen) -> dict:
        """``generate`` keyword arguments under the one sampling rule (temperature 0 means greedy)."""
        opts = sampling_options(GENERATION_DEFAULTS, greedy=greedy, **gen)
        tok = self.processor.tokenizer
        eos = [i for i in dict.fromkeys([tok.eos_token_id, tok.pad_token_id]) if i is not None]
        kwargs = dict(opts, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        if not opts["do_sample"]:
            # Neutral values so that a checkpoint's sampling defaults do not trigger warnings under greedy.
            kwargs.update(temperature=1.0, top_p=1.0, top_k=50)
        return kwargs

    # ---------------------------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: list[str], waves: list, batch_size: int = 8, seed: int | None = None,
                 **gen) -> list[str]:
        """The generation core every driver calls: ``prompts`` (from :meth:`prompt`) and their 16 kHz mono
        waveforms (``None`` for text only), left-padded into batches of ``batch_size``; answers in order."""
        if len(prompts) != len(waves):
            raise ValueError(f"got {len(prompts)} prompts but {len(waves)} waveforms")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        kwargs = self.generation_kwargs(**gen)
        if seed is not None:
            torch.manual_seed(seed)
        outputs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            batch_waves = [w for w in waves[start:start + batch_size] if w is not None]
            inputs = self.processor(prompts[start:start + batch_size], audio=batch_waves or None, padding_side="left")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.dtype)
            generated = self.model.generate(**inputs, **kwargs)
            outputs.extend(t.strip() for t in self.processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:]))
        return outputs

    def predict(self, audio_path, question: str | None = None, seed: int | None = None, **gen) -> str:
        """Answer one request (``audio_path`` ``None`` / ``""`` / ``"empty"``: text only); returns the raw text
        with its three sections (use :func:`fusionaudio.structured.answer_text` for the answer alone).
        Generation options as :meth:`generate` (the family's defaults: greedy, 512 new tokens)."""
        return self.predict_batch([audio_path], [question], seed=seed, **gen)[0]

    def predict_batch(self, audio_paths: Sequence, questions, batch_size: int = 8, seed: int | None = None,
                      **gen) -> list[str]:
        """Answer many requests, left-padded into batches of ``batch_size``.

        ``questions`` is one string for every clip or a list as long as ``audio_paths``; entries of
        ``audio_paths`` may be ``None`` / ``""`` / ``"empty"`` (text only). Every file is decoded before any
        generation, and the first bad one raises :class:`fusionaudio.audio.AudioError` naming it. ``gen``:
        ``do_sample``, ``temperature`` (0: greedy), ``top_p``, ``top_k``, ``max_new_tokens``, ``num_beams``,
        ``min_new_tokens``, ``repetition_penalty``; ``seed`` seeds torch's global generator.
        """
        audio_paths = list(audio_paths)
        if isinstance(questions, str) or questions is None:
            questions = [questions] * len(audio_paths)
        questions = list(questions)
        if len(questions) != len(audio_paths):
            raise ValueError(f"got {len(audio_paths)} audio paths but {len(questions)} questions")
        self.generation_kwargs(**gen)  # bad options fail before any audio is decoded
        if not audio_paths:
            return []
        sr = self.processor.sampling_rate
        waves = [None if p in TEXT_ONLY else load_audio(p, sr, resampler=self.resampler) for p in audio_paths]
        prompts = [self.prompt(q, w is not None) for q, w in zip(questions, waves)]
        return self.generate(prompts, waves, batch_size=batch_size, seed=seed, **gen)
