#!/usr/bin/env python3
"""Draw imgs/architecture.png: the GAMA / FusionAudio data flow, from the model's own config."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from fusionaudio.gama import GamaConfig  # noqa: E402


def box(ax, x, y, w, h, text, color):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5, wrap=True)


def arrow(ax, x0, y0, x1, y1, label=""):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color="#333", lw=1.2))
    if label:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, label, ha="center", fontsize=7, color="#444")


def main(out: str = "imgs/architecture.png") -> None:
    c = GamaConfig.from_name("gama-llama2-7b")
    a, q = c.audio, c.qformer
    rows, cols = a.grid
    fig, ax = plt.subplots(figsize=(13, 4.6))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    box(ax, 0.1, 1.9, 1.5, 0.9, "audio file\nresample 16 kHz\n(sinc), channel 0", "#e8f0fe")
    box(ax, 1.9, 1.9, 1.5, 0.9, f"kaldi fbank\n{a.target_length} x {a.num_mel_bins}\n(x+5.081)/4.4849", "#e8f0fe")
    box(ax, 3.7, 1.6, 2.0, 1.5, f"CAV-MAE audio encoder\n{rows}x{cols} = {rows * cols} patches\n"
        f"{a.specific_depth} blocks_a + {a.unified_depth} blocks_u\ntaps after blocks_a[{a.tap_j}], [{a.tap_k}]",
        "#fff4e5")
    box(ax, 6.1, 3.2, 2.2, 1.1, f"Q-Former (BLIP-2)\n{q.num_query_tokens} queries, {q.num_hidden_layers} layers\n"
        "cross-attn every 2nd layer", "#e6f4ea")
    box(ax, 6.1, 0.3, 2.2, 1.3, "multi-layer aggregator\n2 BERT layers (taps j, k as\ncross-attn memory; reference:\n"
        "cross-attn output discarded)", "#e6f4ea")
    box(ax, 8.7, 3.2, 1.5, 1.1, f"LN + MLP\n-> {q.num_query_tokens} tokens", "#fce8e6")
    box(ax, 8.7, 0.4, 1.5, 1.1, f"LN + MLP\n-> {cols} tokens", "#fce8e6")
    box(ax, 10.6, 1.5, 2.3, 1.7, f"Llama-2-7b-chat + LoRA\n(q_proj, v_proj; r={c.lora.r})\n"
        f"[{c.num_audio_tokens} audio tokens, text]\nlogits/loss on text only", "#f3e8fd")
    arrow(ax, 1.6, 2.35, 1.9, 2.35)
    arrow(ax, 3.4, 2.35, 3.7, 2.35)
    arrow(ax, 5.7, 2.9, 6.1, 3.7)
    ax.text(4.7, 3.45, f"pooled: mean over {rows} mel rows, /50", ha="center", fontsize=7, color="#444")
    arrow(ax, 5.7, 1.8, 6.1, 1.0)
    arrow(ax, 8.3, 3.75, 8.7, 3.75)
    arrow(ax, 8.3, 0.95, 8.7, 0.95)
    arrow(ax, 10.2, 3.75, 10.6, 2.9)
    arrow(ax, 10.2, 0.95, 10.6, 1.8)
    ax.set_title("FusionAudio / GAMA: audio -> 96 audio tokens -> Llama", fontsize=11)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
