"""Audio Q-Former (stock ``Blip2QFormerModel``) and the "multi-layer aggregator" layers.

Both are built from transformers' BLIP-2 Q-Former pieces, run with eager attention
(bit-identical to the reference's BERT code; sdpa differs by ~3e-6).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import (
    Blip2QFormerAttention,
    Blip2QFormerIntermediate,
    Blip2QFormerOutput,
)

from fusionaudio.gama.config import AggregatorConfig, QFormerConfig


def _bert_config(**kwargs) -> Blip2QFormerConfig:
    cfg = Blip2QFormerConfig(hidden_act="gelu", **kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def build_qformer(cfg: QFormerConfig, encoder_width: int) -> Blip2QFormerModel:
    """Q-Former over ``num_query_tokens`` queries, cross-attending (every
    ``cross_attention_frequency`` layers from layer 0) to ``encoder_width`` features."""
    return Blip2QFormerModel(
        _bert_config(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            cross_attention_frequency=cfg.cross_attention_frequency,
            encoder_hidden_size=encoder_width,
            layer_norm_eps=cfg.layer_norm_eps,
            hidden_dropout_prob=cfg.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        )
    )


class AggregatorLayer(nn.Module):
    """One BERT layer of the aggregator: self-attention, cross-attention, feed-forward.

    ``fusion="reference"``: the reference computes the cross-attention and then discards
    it (the feed-forward reads the self-attention output), so the released weights do not
    depend on the taps; we skip that dead computation. ``fusion="cross_attention"`` feeds
    the cross-attention output to the feed-forward (the evident intent, for new training).
    """

    def __init__(self, cfg: AggregatorConfig, hidden_size: int):
        super().__init__()
        self.fusion = cfg.fusion
        bert = _bert_config(
            hidden_size=hidden_size,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            encoder_hidden_size=hidden_size,
            layer_norm_eps=cfg.layer_norm_eps,
            hidden_dropout_prob=cfg.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        )
        self.attention = Blip2QFormerAttention(bert)
        self.crossattention = Blip2QFormerAttention(bert, is_cross_attention=True)
        self.intermediate = Blip2QFormerIntermediate(bert)
        self.output = Blip2QFormerOutput(bert)

    def forward(self, hidden_states: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.attention(hidden_states)
        if self.fusion == "cross_attention":
            x = self.crossattention(x, encoder_hidden_states=memory)
        return self.output(self.intermediate(x), x)
