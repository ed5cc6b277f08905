"""Parity: the audio path recomputed from the reference-named tensors with plain torch
(written from the reference's architecture, independently of the model code) must equal
``encode_audio`` after loading through the key map. This pins the semantics of every
mapped tensor (e.g. which CAV-MAE norms run where, which Q-Former feed-forward is used)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fusionaudio.gama import GamaConfig, load_model
from fusionaudio.gama.tiny import make_reference_base_dir


def _ln(x, S, p, eps):
    return F.layer_norm(x, x.shape[-1:], S[p + ".weight"], S[p + ".bias"], eps)


def _lin(x, S, p):
    return F.linear(x, S[p + ".weight"], S[p + ".bias"])


def _vit_block(x, S, p, heads, n1, n2, eps=1e-5):
    b, n, c = x.shape
    h = _ln(x, S, f"{p}.{n1}", eps)
    q, k, v = _lin(h, S, f"{p}.attn.qkv").reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) * (c // heads) ** -0.5, dim=-1) @ v
    x = x + _lin(a.transpose(1, 2).reshape(b, n, c), S, f"{p}.attn.proj")
    h = _ln(x, S, f"{p}.{n2}", eps)
    return x + _lin(F.gelu(_lin(h, S, f"{p}.mlp.fc1")), S, f"{p}.mlp.fc2")


def _bert_attention(x, memory, S, p, heads, eps=1e-12):
    """BertAttention: self (memory=None) or cross attention, then dense + residual LayerNorm."""
    kv = x if memory is None else memory
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    q, k, v = (split(_lin(t, S, f"{p}.self.{n}")) for t, n in ((x, "query"), (kv, "key"), (kv, "value")))
    ctx = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v
    ctx = ctx.transpose(1, 2).reshape(x.shape)
    return _ln(_lin(ctx, S, f"{p}.output.dense") + x, S, f"{p}.output.LayerNorm", eps)


def _bert_ff(x, S, inter, out, eps=1e-12):
    return _ln(_lin(F.gelu(_lin(x, S, f"{inter}.dense")), S, f"{out}.dense") + x, S, f"{out}.LayerNorm", eps)


def reference_audio_tokens(S, cfg: GamaConfig, fbank):
    a = cfg.audio
    x = fbank.unsqueeze(1).transpose(2, 3)
    x = F.conv2d(x, S["model.audio_encoder.patch_embed_a.proj.weight"], S["model.audio_encoder.patch_embed_a.proj.bias"],
                 stride=a.patch_size).flatten(2).transpose(1, 2)
    x = x + S["model.audio_encoder.pos_embed_a"] + S["model.audio_encoder.modality_a"]
    for i in range(a.specific_depth):
        x = _vit_block(x, S, f"model.audio_encoder.blocks_a.{i}", a.num_heads, "norm1", "norm2")
        if i == a.tap_j:
            xj = x
        if i == a.tap_k:
            xk = x
    for i in range(a.unified_depth):
        x = _vit_block(x, S, f"model.audio_encoder.blocks_u.{i}", a.num_heads, "norm1_a", "norm2_a")
    rows, cols = a.grid

    def pool(t):
        return t.reshape(t.shape[0], rows, cols, -1).mean(1) / 50

    final = pool(_ln(x, S, "model.audio_encoder.norm_a", 1e-5))
    # aggregator: self-attention, (discarded cross-attention), feed-forward on the self-attention output
    agg = final
    for layer in (1, 2):
        p = f"model.audio_aggregator_layer_{layer}"
        agg = _bert_ff(_bert_attention(agg, None, S, f"{p}.attention", cfg.aggregator.num_attention_heads),
                       S, f"{p}.intermediate", f"{p}.output")
    # Q-Former on the query tokens, cross-attending on even layers, query feed-forward
    memory = _ln(final, S, "model.qformer_proj_norm", 1e-5)
    h = _ln(S["model.query_tokens"].expand(fbank.shape[0], -1, -1), S, "model.Qformer.bert.embeddings.LayerNorm", 1e-12)
    for i in range(cfg.qformer.num_hidden_layers):
        p = f"model.Qformer.bert.encoder.layer.{i}"
        h = _bert_attention(h, None, S, f"{p}.attention", cfg.qformer.num_attention_heads)
        if i % cfg.qformer.cross_attention_frequency == 0:
            h = _bert_attention(h, memory, S, f"{p}.crossattention", cfg.qformer.num_attention_heads)
        h = _bert_ff(h, S, f"{p}.intermediate_query", f"{p}.output_query")

    def project(t, name):
        t = F.layer_norm(t, t.shape[-1:], eps=1e-5)
        return _lin(F.gelu(_lin(t, S, f"model.{name}.0")), S, f"model.{name}.2")

    return torch.cat([project(h, "audio_proj_qformer"), project(agg, "audio_proj_audioenc")], dim=1), (xj, xk)


def _reference_state(base_dir):
    S = {}
    for f in sorted(base_dir.glob("pytorch_model-*.bin")):
        S.update(torch.load(f, weights_only=True))
    return S


def test_audio_path_matches_reference_math(tmp_path):
    # a deeper encoder than "tiny" so that the taps sit at distinct depths
    cfg = GamaConfig.from_name("tiny", audio={"specific_depth": 5, "unified_depth": 1, "tap_j": None, "tap_k": None})
    base = make_reference_base_dir(tmp_path / "m", cfg, seed=11)
    S = _reference_state(base)
    # make the unused norms differ clearly from the used ones, so a wrong map would show
    for k in S:
        if ".norm1_v." in k or ".norm2_v." in k or (".blocks_a." in k and "_a." in k):
            S[k] = S[k] + 5.0
    torch.save(S, base / "pytorch_model-00001-of-00002.bin")
    (base / "pytorch_model-00002-of-00002.bin").unlink()
    (base / "pytorch_model.bin.index.json").unlink()
    (base / "pytorch_model-00001-of-00002.bin").rename(base / "pytorch_model.bin")

    model, _ = load_model(base)
    fbank = torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.encode_audio(fbank)
        expected, _ = reference_audio_tokens(S, model.config, fbank)
    assert ours.shape == expected.shape == (2, 96, model.config.hidden_size)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
