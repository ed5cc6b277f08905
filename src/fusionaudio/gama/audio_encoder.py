"""CAV-MAE audio branch: a ViT-B over 16x16 fbank patches that also exposes two taps.

Input ``[B, T=1024, F=128]`` fbank; output three ``[B, 512, D]`` tensors: the final
features (after ``blocks_u`` and ``norm_a``) and the hidden states after
``blocks_a[tap_j]`` / ``blocks_a[tap_k]`` through ``norm_j`` / ``norm_k``.

Reference quirk kept: the modality-specific blocks run their generic norms
(``norm1``/``norm2``) and the unified block runs its audio norms; the unused norms of the
released checkpoints are dropped by the key map (``fusionaudio.gama.keymap``).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from fusionaudio.gama.config import AudioEncoderConfig


def sincos_pos_embed_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding ``[rows*cols, dim]``, row-major.

    Half the channels encode the row, half the column. Only used to initialise a fresh
    model: released checkpoints carry their own ``pos_embed_a``.
    """
    if dim % 4:
        raise ValueError("embed_dim must be a multiple of 4 for the 2-D sin-cos embedding")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.to(torch.float64)[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([encode(r.reshape(-1)), encode(c.reshape(-1))], dim=1).float()


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, F, T] -> [B, N, D]
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CavMaeAudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        rows, cols = cfg.grid
        self.patch_embed_a = PatchEmbed(cfg.patch_size, d)
        self.pos_embed_a = nn.Parameter(sincos_pos_embed_2d(d, rows, cols).unsqueeze(0))
        self.modality_a = nn.Parameter(torch.zeros(1, 1, d))
        make = lambda: Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.layer_norm_eps)  # noqa: E731
        self.blocks_a = nn.ModuleList(make() for _ in range(cfg.specific_depth))
        self.blocks_u = nn.ModuleList(make() for _ in range(cfg.unified_depth))
        self.norm_a = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm_j = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm_k = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Fresh-model init as the reference does (xavier linears, normal modality vector)."""
        w = self.patch_embed_a.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.modality_a, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = fbank.unsqueeze(1).transpose(2, 3)  # [B, 1, F(mel), T]
        x = self.patch_embed_a(x) + self.pos_embed_a + self.modality_a  # mel-row-major patches
        tap_j = tap_k = None
        for i, block in enumerate(self.blocks_a):
            x = block(x)
            if i == self.cfg.tap_j:
                tap_j = x
            if i == self.cfg.tap_k:
                tap_k = x
        for block in self.blocks_u:
            x = block(x)
        return self.norm_a(x), self.norm_j(tap_j), self.norm_k(tap_k)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, rows*cols, D]`` -> mean over the mel rows -> ``[B, cols, D]`` / pool_divisor."""
        rows, cols = self.cfg.grid
        b, _, d = features.shape
        return features.reshape(b, rows, cols, d).mean(dim=1) / self.cfg.pool_divisor


__all__ = ["CavMaeAudioEncoder", "sincos_pos_embed_2d"]
