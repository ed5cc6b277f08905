"""``FusionAudioInference``: load once, answer questions about audio files, batched.

The audio of each request is encoded once and carried through decoding by the KV cache;
requests are batched with left padding (greedy batches give the same tokens as the same
requests one at a time). The response is the decoded new tokens.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fusionaudio.audio import AudioInfo, load_fbank
from fusionaudio.gama.generation import GENERATION_DEFAULTS
from fusionaudio.gama.loading import load_model, resolve_model_paths
from fusionaudio.loading.device import resolve_device
from fusionaudio.loading.weights import resolve_dtype
from fusionaudio.gama.prompts import build_prompt
from fusionaudio.records import TEXT_ONLY
from fusionaudio.sampling import sampling_options

log = logging.getLogger("fusionaudio.gama.inference")

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


def default_model() -> tuple[Path, str]:
    """(directory, label) of the model used when no ``base_model`` is given: the bundled demo."""
    if not (DEMO_MODEL_DIR / "fusionaudio_config.json").is_file():
        raise FileNotFoundError(f"{DEMO_MODEL_DIR}: the bundled demo model is missing; pass --base_model "
                                "(or rebuild it with scripts/train/make_demo_model.sh)")
    return DEMO_MODEL_DIR, "bundled demo model (tiny, trained on synthetic sound scenes)"


class PromptRepetitionPenalty:
    """transformers' ``RepetitionPenaltyLogitsProcessor`` over the prompt's text ids and the new ids (as
    the reference applies it); left padding is replaced by each row's first real token, so padding
    penalises nothing."""

    def __init__(self, penalty: float, prompt_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers import RepetitionPenaltyLogitsProcessor

        self.inner = RepetitionPenaltyLogitsProcessor(penalty)
        first = prompt_ids.gather(1, attention_mask.long().argmax(1, keepdim=True))
        self.prompt = torch.where(attention_mask.bool(), prompt_ids, first)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt.to(input_ids.device)
        return self.inner(torch.cat([prompt, input_ids], dim=1), scores)


@dataclass
class Request:
    question: str
    fbank: torch.Tensor | None = None  # [1024, 128]
    input: str | None = None


class FusionAudioInference:
    """GAMA / FusionAudio inference: ``predict(audio_path, question)`` and ``predict_batch``.

    ``quantize="int8"`` / ``"nf4"`` holds the Llama's linear layers in 8 / 4 bits (see ``load_model``)."""

    arch = "gama"

    def __init__(self, base_model_path=None, model_path=None, device="cpu", dtype="float32",
                 template: str = "alpaca_short", resampler: str = "sinc", attention: str = "sdpa",
                 check_values: bool = True, quantize: str | None = None):
        self.device, note = resolve_device(device)
        if note:
            log.warning(note)
        self.model_label = None
        if base_model_path is None and model_path is None:
            base_model_path, self.model_label = default_model()
        # a fine-tuned checkpoint alone loads on the base its training_args.json records
        base_model_path, model_path = resolve_model_paths(base_model_path, model_path)
        self.base_model_path, self.model_path = str(base_model_path), model_path
        self.model, self.tokenizer = load_model(base_model_path, model_path, device=self.device,
                                                dtype=resolve_dtype(dtype), check_values=check_values,
                                                quantize=quantize)
        self.template = template
        self.resampler = resampler
        # a padded vocabulary (more embedding rows than tokens): the ids past the tokenizer are never emitted
        rows = self.model.llm.get_output_embeddings().weight.shape[0]
        self.unused_ids = list(range(len(self.tokenizer), rows))
        # SDPA in the Q-Former/aggregator: logits within 2e-7 of eager (scripts/bench/bench_attention.py)
        self.model.set_attention(attention)

    # -- audio --------------------------------------------------------------------------
    def load_audio(self, audio_path) -> tuple[torch.Tensor | None, AudioInfo | None]:
        """(fbank [1024, 128], info), or (None, None) for a text-only request (``None``, ``""``, ``"empty"``)."""
        if audio_path in TEXT_ONLY:
            return None, None
        return load_fbank(audio_path, return_info=True, resampler=getattr(self, "resampler", "sinc"))

    def load_audio_batch(self, audio_paths) -> list[torch.Tensor | None]:
        """fbanks of ``audio_paths`` (None for text only), the fbank computed in one batched pass on the
        model's device; the first bad file raises its :class:`AudioError`."""
        from fusionaudio.audio import load_fbank_batch

        paths = [p for p in audio_paths if p not in TEXT_ONLY]
        fbanks = iter(load_fbank_batch(paths, device=self.device, resampler=getattr(self, "resampler", "sinc"))[0]
                      if paths else [])
        return [None if p in TEXT_ONLY else next(fbanks) for p in audio_paths]

    def max_positions(self) -> int | None:
        return getattr(self.model.llm.config, "max_position_embeddings", None)

    def check_length(self, request: "Request", max_new_tokens: int) -> str | None:
        """None if the request fits the model's positions, else the problem (prompt tokens + audio
        tokens + ``max_new_tokens`` against ``max_position_embeddings``)."""
        limit = self.max_positions()
        if not limit:
            return None
        prompt = build_prompt(request.question, request.input, template=self.template)
        n_text = len(self.tokenizer(prompt).input_ids)
        n_audio = self.model.num_audio_tokens if request.fbank is not None else 0
        if n_text + n_audio + max_new_tokens <= limit:
            return None
        return (f"prompt too long: {n_text} prompt tokens + {n_audio} audio tokens + max_new_tokens "
                f"{max_new_tokens} = {n_text + n_audio + max_new_tokens} > the model's {limit} positions; "
                "shorten the question/input or lower max_new_tokens")

    # -- generation -----------------------------------------------------------------------
    def generation_config(self, greedy: bool = False, **overrides):
        """transformers' ``GenerationConfig`` for these options (the reference's defaults, the one sampling
        rule of :func:`fusionaudio.sampling.sampling_options`: temperature 0 means greedy)."""
        from transformers import GenerationConfig

        opts = sampling_options(GENERATION_DEFAULTS, greedy=greedy, **overrides)
        tok = self.tokenizer
        return GenerationConfig(**opts, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)

    @torch.no_grad()
    def generate(self, requests: list[Request], batch_size: int = 8, seed: int | None = None,
                 stopping_criteria=None, row_max_new_tokens: list[int] | None = None, **gen) -> list[str]:
        """The generation core every driver calls: answer prepared requests, batched; results come back in
        request order. ``stopping_criteria`` (a transformers ``StoppingCriteria``, e.g. the server's per-row
        watcher that stops each row at its own length) sees every batch; it needs the requests in one batch of
        one kind (all with or all without audio). ``row_max_new_tokens``: each request's own new-token limit
        (what that watcher enforces), checked against the model's positions instead of ``max_new_tokens``."""
        config = self.generation_config(**gen)
        if seed is not None:
            torch.manual_seed(seed)
        answers: list[str | None] = [None] * len(requests)
        # Requests with and without audio have different prefix lengths: batch them apart.
        for with_audio in (True, False):
            idx = [i for i, r in enumerate(requests) if (r.fbank is not None) == with_audio]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                limits = None if row_max_new_tokens is None else [row_max_new_tokens[i] for i in chunk]
                for i, text in zip(chunk, self._generate_chunk([requests[i] for i in chunk], config,
                                                                  stopping_criteria, limits)):
                    answers[i] = text
        return answers  # type: ignore[return-value]

    def _generate_chunk(self, chunk: list[Request], config, stopping_criteria=None, limits=None) -> list[str]:
        prompts = [build_prompt(r.question, r.input, template=self.template) for r in chunk]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        limit = self.max_positions()
        if limit:
            n_audio = self.model.num_audio_tokens if chunk[0].fbank is not None else 0
            lengths = enc.attention_mask.sum(1).tolist()
            for r, n, m in zip(chunk, lengths, limits or [config.max_new_tokens] * len(chunk)):
                if n + n_audio + m > limit:
                    raise ValueError(self.check_length(r, m) + f" (question {r.question[:60]!r})")
        audio = torch.stack([r.fbank for r in chunk]) if chunk[0].fbank is not None else None
        extra, processors = {}, []
        if config.repetition_penalty not in (None, 1.0):
            # The reference's generate sees the prompt's ids, so its penalty covers the prompt's tokens too;
            # ours is fed embeddings, so the prompt ids are handed to the penalty here.
            processors.append(PromptRepetitionPenalty(config.repetition_penalty, enc.input_ids, enc.attention_mask))
            config = copy.deepcopy(config)
            config.repetition_penalty = None
        if getattr(self, "unused_ids", None):
            from transformers import SuppressTokensLogitsProcessor

            processors.append(SuppressTokensLogitsProcessor(self.unused_ids, device=self.device))
        if processors:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList(processors)
        if stopping_criteria is not None:
            from transformers import StoppingCriteriaList

            extra["stopping_criteria"] = StoppingCriteriaList([stopping_criteria])
        device = self.device
        new = self.model.generate(enc.input_ids.to(device), enc.attention_mask.to(device),
                                  None if audio is None else audio.to(device), generation_config=config, **extra)
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def predict(self, audio_path, question: str, temperature=0.1, top_p=0.95, top_k=300,
                max_new_tokens=1024, do_sample=True, num_beams=1, seed=None) -> str:
        """Answer one question about one audio file (``None``/"empty": text only)."""
        return self.predict_batch([audio_path], question, temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=num_beams,
                                  seed=seed)[0]

    def predict_batch(self, audio_paths, questions, batch_size: int = 8, seed=None, **gen) -> list[str]:
        """Answer ``questions`` (one string for all, or one per path) about ``audio_paths``.

        Streams: the clips are decoded ``batch_size`` at a time (a folder of 10,000 clips is never in
        memory at once), each batch's fbank in one pass on the model's device. The first bad file
        raises its :class:`AudioError`; ``seed`` seeds the first batch (as :meth:`generate`)."""
        audio_paths = list(audio_paths)
        if isinstance(questions, str):
            questions = [questions] * len(audio_paths)
        if len(questions) != len(audio_paths):
            raise ValueError(f"{len(questions)} questions for {len(audio_paths)} audio paths")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed is not None:
            torch.manual_seed(seed)
        answers: list[str] = []
        for start in range(0, len(audio_paths), batch_size):
            paths = audio_paths[start:start + batch_size]
            fbanks = self.load_audio_batch(paths)
            requests = [Request(q, fb) for q, fb in zip(questions[start:start + batch_size], fbanks)]
            answers += self.generate(requests, batch_size=batch_size, **gen)
        return answers
