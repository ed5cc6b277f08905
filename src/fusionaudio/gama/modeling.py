"""The GAMA / FusionAudio model: audio tower + Q-Former + aggregator + projections, and a
stock ``LlamaForCausalLM`` fed with ``inputs_embeds``.

Sequence layout (as the reference): ``[32 Q-Former tokens, 64 aggregator tokens, text]``;
positions count only attended tokens, so with no padding the text starts at position 96.
Logits and loss cover the text positions only. Without audio the model is plain Llama
(+ LoRA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from fusionaudio.gama.audio_encoder import CavMaeAudioEncoder
from fusionaudio.gama.config import GamaConfig, LoraSettings
from fusionaudio.gama.qformer import AggregatorLayer, build_qformer


def _activation_checkpointing(llm) -> bool:
    flag = "is_activation_checkpointing" if hasattr(llm, "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(llm, flag, False))


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class GamaForCausalLM(nn.Module):
    def __init__(self, config: GamaConfig):
        super().__init__()
        self.config = config
        audio_dim, q_dim, hidden = config.audio.embed_dim, config.qformer.hidden_size, config.hidden_size

        self.audio_encoder = CavMaeAudioEncoder(config.audio)
        self.qformer = build_qformer(config.qformer, encoder_width=audio_dim)
        self.query_tokens = nn.Parameter(torch.randn(1, config.qformer.num_query_tokens, q_dim) * 0.02)
        self.qformer_proj_norm = nn.LayerNorm(audio_dim)
        self.audio_aggregator_layer_1 = AggregatorLayer(config.aggregator, audio_dim)
        self.audio_aggregator_layer_2 = AggregatorLayer(config.aggregator, audio_dim)
        self.audio_proj_norm_qformer = nn.LayerNorm(q_dim, elementwise_affine=False)
        self.audio_proj_qformer = _projection(q_dim, hidden)
        self.audio_proj_norm_audioenc = nn.LayerNorm(audio_dim, elementwise_affine=False)
        self.audio_proj_audioenc = _projection(audio_dim, hidden)
        self.llm = LlamaForCausalLM(config.llama_config())
        self.lora_enabled = False

    # -- adapters ------------------------------------------------------------------
    def enable_lora(self, settings: LoraSettings | None = None) -> None:
        """Inject LoRA adapters (stock peft) into the Llama attention projections."""
        from peft import LoraConfig, inject_adapter_in_model

        settings = settings or self.config.lora or LoraSettings()
        if self.lora_enabled:
            raise RuntimeError("LoRA is already enabled on this model")
        lora = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            bias="none",
        )
        inject_adapter_in_model(lora, self.llm)
        self.config.lora = settings
        self.lora_enabled = True

    def set_attention(self, implementation: str) -> None:
        """Attention kernel of the Q-Former and aggregator layers: ``"eager"`` (bit-identical to the
        reference's BERT code; the default when built) or ``"sdpa"`` (torch's fused kernel, ~1e-6 away).
        The CAV-MAE blocks always use ``scaled_dot_product_attention``; the Llama keeps its own setting."""
        if implementation not in ("eager", "sdpa"):
            raise ValueError(f"attention must be 'eager' or 'sdpa', got {implementation!r}")
        for module in (self.qformer, self.audio_aggregator_layer_1, self.audio_aggregator_layer_2):
            for sub in module.modules():
                config = getattr(sub, "config", None)
                if config is not None and hasattr(config, "_attn_implementation"):
                    config._attn_implementation = implementation

    # -- properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query_tokens.dtype

    @property
    def num_audio_tokens(self) -> int:
        return self.config.num_audio_tokens

    # -- audio path ----------------------------------------------------------------
    def pooled_and_aggregated(self, audio_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fbank ``[B, 1024, 128]`` -> (the encoder's pooled final features, the aggregator's
        output), both ``[B, 64, audio width]``: what the Q-Former and the aggregator tokens read."""
        if audio_input.dim() != 3:
            raise ValueError(f"audio_input must be [B, frames, mel], got shape {tuple(audio_input.shape)}")
        enc = self.audio_encoder
        final, tap_j, tap_k = enc(audio_input.to(device=self.device, dtype=self.dtype))
        final, tap_j, tap_k = enc.pool(final), enc.pool(tap_j), enc.pool(tap_k)
        aggregated = self.audio_aggregator_layer_1(final, memory=tap_j)
        return final, self.audio_aggregator_layer_2(aggregated, memory=tap_k)

    def encode_audio(self, audio_input: torch.Tensor) -> torch.Tensor:
        """fbank ``[B, 1024, 128]`` -> audio token embeddings ``[B, 96, hidden]``."""
        final, aggregated = self.pooled_and_aggregated(audio_input)
        memory = self.qformer_proj_norm(final)
        queries = self.query_tokens.expand(final.shape[0], -1, -1)
        query_out = self.qformer(query_embeds=queries, encoder_hidden_states=memory).last_hidden_state

        q_tokens = self.audio_proj_qformer(self.audio_proj_norm_qformer(query_out))
        a_tokens = self.audio_proj_audioenc(self.audio_proj_norm_audioenc(aggregated))
        return torch.cat([q_tokens, a_tokens], dim=1)

    def _build_inputs(self, input_ids, attention_mask, audio_input, audio_embeds):
        """Prepend the audio tokens; return (embeds, mask, position_ids, n_audio)."""
        text = self.llm.get_input_embeddings()(input_ids.to(self.device))
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=self.device)
        attention_mask = attention_mask.to(self.device, torch.long)
        if audio_embeds is None and audio_input is not None:
            audio_embeds = self.encode_audio(audio_input)
        n_audio = 0
        if audio_embeds is not None:
            if audio_embeds.shape[0] != input_ids.shape[0]:
                raise ValueError(f"batch mismatch: {audio_embeds.shape[0]} audio inputs for {input_ids.shape[0]} texts")
            n_audio = audio_embeds.shape[1]
            text = torch.cat([audio_embeds.to(text.dtype), text], dim=1)
            ones = attention_mask.new_ones(attention_mask.shape[0], n_audio)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return text, attention_mask, position_ids, n_audio

    # -- forward / generate --------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        audio_input: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        audio_embeds: torch.Tensor | None = None,
        audio_index: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """Logits ``[B, T, vocab]`` over the text positions only (float32), and the
        next-token loss over text labels (-100 = ignored), as the reference computes.

        ``audio_index`` (``[B]``): ``audio_input`` / ``audio_embeds`` hold the U distinct
        clips and text row ``i`` goes with clip ``audio_index[i]``. The audio prefix then runs
        through the Llama once per clip and its keys/values are shared by that clip's rows
        (causal attention: the prefix never sees the text, so this is the same computation,
        up to float rounding, as repeating the clip per row; gradients add up over the rows)."""
        if audio_index is not None:
            if audio_index.shape != input_ids.shape[:1]:
                raise ValueError(f"audio_index must be [B] = [{input_ids.shape[0]}], got {tuple(audio_index.shape)}")
            if audio_embeds is None:
                audio_embeds = self.encode_audio(audio_input)
            if self._can_share_prefix(audio_embeds, audio_index):
                return self._forward_shared_prefix(input_ids, attention_mask, labels, audio_embeds, audio_index)
            audio_embeds = audio_embeds[audio_index.to(audio_embeds.device)]
        embeds, mask, position_ids, n_audio = self._build_inputs(input_ids, attention_mask, audio_input, audio_embeds)
        out = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return self._text_output(out.last_hidden_state[:, n_audio:], labels)

    def _can_share_prefix(self, audio_embeds: torch.Tensor, audio_index: torch.Tensor) -> bool:
        """Worth it (some clip has several rows) and possible (activation checkpointing
        turns the Llama's cache off)."""
        return audio_index.numel() > audio_embeds.shape[0] and not _activation_checkpointing(self.llm)

    def _forward_shared_prefix(self, input_ids, attention_mask, labels, audio_embeds, audio_index):
        n_clips, n_audio = audio_embeds.shape[:2]
        text, mask, position_ids, _ = self._build_inputs(input_ids, attention_mask, None, None)
        mask = torch.cat([mask.new_ones(mask.shape[0], n_audio), mask], dim=1)
        position_ids = position_ids + n_audio  # the text follows n_audio always-attended tokens
        prefix_pos = torch.arange(n_audio, device=self.device).expand(n_clips, -1)
        prefix = self.llm.model(inputs_embeds=audio_embeds.to(text.dtype), position_ids=prefix_pos, use_cache=True)
        cache = prefix.past_key_values
        cache.reorder_cache(audio_index.to(self.device))  # [U, ...] -> [B, ...], differentiable
        out = self.llm.model(inputs_embeds=text, attention_mask=mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
        return self._text_output(out.last_hidden_state, labels)

    def _text_output(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> CausalLMOutputWithPast:
        logits = self.llm.lm_head(hidden).float()
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        audio_input: torch.Tensor | None = None,
        *,
        audio_embeds: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """New token ids ``[B, N]`` (prompt excluded). Text should be left-padded.

        The audio is encoded once; the KV cache carries it through decoding. Extra
        keyword arguments go to ``transformers``' ``generate`` (``generation_config``,
        ``max_new_tokens``, ``do_sample``, ...).
        """
        embeds, mask, _, _ = self._build_inputs(input_ids, attention_mask, audio_input, audio_embeds)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)
