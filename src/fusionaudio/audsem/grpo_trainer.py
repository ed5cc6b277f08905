"""TRL's ``GRPOTrainer`` with the clip's audio in every rollout and every log-prob pass.

TRL's trainer knows images, not audio. Three methods change, each only to add the audio:

* :meth:`AudioGRPOTrainer._generate_and_score_completions` decodes the clips of the generation batch
  (``audio_path`` column, the card's resampling), computes their features once (one row per completion),
  runs TRL's step with them and returns them beside TRL's tensors, so TRL's shuffling and splitting of the
  batch keeps each row with its clip;
* :meth:`AudioGRPOTrainer._tokenize_prompts` renders each prompt with its audio placeholder expanded to the
  clip's audio-token count and hands the features to TRL's ``model.generate`` call (the rollouts hear the
  audio);
* :meth:`AudioGRPOTrainer._get_per_token_logps_and_entropies` gives the model each row's features in every
  log-prob pass (old policy, reference, and the loss), and raises if a pass comes without them.

Rollouts never sample the audio / image / video placeholder or bracket tokens (``suppress_tokens``): such a
token in a completion would not match the clip's features in the log-prob passes.

vLLM rollouts are refused: TRL sends vLLM the prompt tokens only, so its rollouts would not hear the audio
(upstream's vLLM path had exactly that defect).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from trl import GRPOTrainer

from fusionaudio.audio import AudioError
from fusionaudio.audsem.grpo_data import load_clip, prompt_ids
from fusionaudio.errors import UsageError

__all__ = ["AudioGRPOTrainer"]

#: Thinker config fields naming the multimodal placeholder and bracket tokens (never sampled in a rollout).
_PLACEHOLDER_IDS = ("audio_token_index", "audio_start_token_id", "audio_end_token_id", "image_token_index",
                    "video_token_index", "vision_start_token_id", "vision_end_token_id")


class _WithAudio:
    """Calls ``model`` with the audio features of the rows it is given, chunk after chunk, in order."""

    def __init__(self, model, features: torch.Tensor, mask: torch.Tensor):
        self.model, self.features, self.mask, self.cursor = model, features, mask, 0

    def __call__(self, **kwargs):
        rows = kwargs["input_ids"].size(0)
        kwargs["input_features"] = self.features[self.cursor:self.cursor + rows]
        kwargs["feature_attention_mask"] = self.mask[self.cursor:self.cursor + rows]
        self.cursor += rows
        return self.model(**kwargs)


class AudioGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` for the Qwen2.5-Omni thinker: rows carry ``prompt`` (conversational, one audio
    placeholder), ``audio_path`` and ``record`` (for error messages) besides the reward columns.

    Args:
        audio_processor: the checkpoint's :class:`fusionaudio.audsem.processor.OmniAudioProcessor`; its
            tokenizer is TRL's ``processing_class``.
        feature_dtype: dtype of the audio features fed to the model (the model's dtype).
        resampler: how clips are brought to 16 kHz (``sinc``: the model card's).
        Everything else is ``GRPOTrainer``'s.
    """

    def __init__(self, *args, audio_processor, feature_dtype=torch.float32, resampler: str = "sinc", **kwargs):
        config = kwargs.get("args")
        for name, what in (("use_vllm", "vLLM rollouts receive the prompt text only, never the audio"),
                           ("use_transformers_continuous_batching", "continuous batching takes no audio")):
            if config is not None and getattr(config, name, False):
                raise UsageError(f"{name} is not supported: {what}")
        for name in ("tools", "rollout_func", "environment_factory"):
            if kwargs.get(name):
                raise UsageError(f"{name} is not supported by the audio GRPO trainer")
        self.audio_processor = audio_processor
        self.feature_dtype = feature_dtype
        self.resampler = resampler
        self._audio = None  # (features, mask) of the rows of the current forward passes
        self._rollout = None  # (audio-token counts, features, mask) of the prompts being generated
        super().__init__(*args, processing_class=audio_processor.tokenizer, **kwargs)
        # TRL copies a loaded adapter into a "ref" adapter (the reference policy): it must stay frozen.
        for name, param in self.model.named_parameters():
            if ".ref." in name:
                param.requires_grad_(False)
        # A sampled audio / image / video placeholder or bracket token would not match the features in the
        # log-prob passes (TRL suppresses the image token for vision models the same way).
        config = self.accelerator.unwrap_model(self.model).config
        placeholders = {getattr(config, name) for name in _PLACEHOLDER_IDS if getattr(config, name, None) is not None}
        suppressed = sorted(placeholders | set(self.generation_config.suppress_tokens or []))
        self.generation_config.suppress_tokens = suppressed
        self.generation_kwargs["suppress_tokens"] = suppressed

    # ------------------------------------------------------------------------------------ audio rows
    def _clip_features(self, inputs: list[dict]):
        """Features of each row's clip: ``(audio-token counts, input_features, feature_attention_mask)``."""
        waves, cache = [], {}
        for row in inputs:
            path = row["audio_path"]
            if path not in cache:
                try:
                    cache[path] = load_clip(path, self.audio_processor, self.resampler)
                except AudioError as exc:
                    raise AudioError(f"record {row.get('record')}: {exc.problem}", exc.path) from exc
            waves.append(cache[path])
        feats = self.audio_processor.audio_features(waves)
        device = self.accelerator.device
        features = feats["input_features"].to(device=device, dtype=self.feature_dtype)
        return [int(n) for n in feats["num_audio_tokens"]], features, feats["feature_attention_mask"].to(device)

    @contextmanager
    def _rows_audio(self, features: torch.Tensor, mask: torch.Tensor):
        previous, self._audio = self._audio, (features, mask)
        try:
            yield
        finally:
            self._audio = previous

    # ------------------------------------------------------------------------------- TRL overrides
    def _generate_and_score_completions(self, inputs):
        counts, features, mask = self._clip_features(inputs)
        self._rollout = (counts, features, mask)
        try:
            with self._rows_audio(features, mask):
                output = super()._generate_and_score_completions(inputs)
        finally:
            self._rollout = None
        output["input_features"] = features
        output["feature_attention_mask"] = mask
        return output

    def _tokenize_prompts(self, prompts: list):
        if self._rollout is None:
            raise RuntimeError("prompts tokenized outside a rollout: their audio is unknown")
        counts, features, mask = self._rollout
        if len(prompts) != len(counts):
            raise RuntimeError(f"{len(prompts)} prompts but {len(counts)} clips in the rollout")
        ids = [prompt_ids(self.audio_processor, p, n) for p, n in zip(prompts, counts)]
        return ids, None, {"input_features": features, "feature_attention_mask": mask}

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **image_fields):
        if self._audio is None:
            raise RuntimeError("a log-prob pass without the clips' audio features")
        features, mask = self._audio
        if features.size(0) != input_ids.size(0):
            raise RuntimeError(f"{input_ids.size(0)} sequences but {features.size(0)} clips' features")
        with_audio = _WithAudio(model, features, mask)
        result = super()._get_per_token_logps_and_entropies(
            with_audio, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss)
        if with_audio.cursor != input_ids.size(0):
            raise RuntimeError(f"only {with_audio.cursor} of {input_ids.size(0)} sequences were scored with audio")
        return result

    def _compute_loss(self, model, inputs):
        with self._rows_audio(inputs["input_features"], inputs["feature_attention_mask"]):
            return super()._compute_loss(model, inputs)
