"""A tiny random ASE model written in the released layout (for tests and CLI smoke runs), offline.

``make_tiny_ase(out_dir)`` writes ``out_dir/bert`` (a 1-layer BertConfig + a small WordPiece
``vocab.txt``) and ``out_dir/ase.pt`` (``{"model": released state dict, "config": WavCaps-style yaml
dict, "epoch": numpy int}``), returning both paths. Geometry: 16 mels, spec 64 (256 frames, 2.56 s
at 32 kHz / hop 320), patch 4, embed 8, depths 2/2/2, heads 2/2/4, window 4, embed size 16.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import torch

TINY = dict(n_mels=16, spec_size=64, patch_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(2, 2, 4),
            window_size=4, embed_size=16)
WORDS = ["a", "dog", "barks", "man", "speaks", "rain", "falls", "on", "the", "roof", "car", "engine", "bird",
         "sings", "loud", "water", "##s", "##ing", "and", "is"]


def tiny_bert_dir(out: Path) -> Path:
    from transformers import BertConfig

    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase) + \
            [f"##{c}" for c in string.ascii_lowercase] + list("0123456789") + WORDS
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64).save_pretrained(out)
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return out


def make_tiny_ase(out_dir, seed: int = 0, std: float = 0.2) -> tuple[Path, Path]:
    """``(checkpoint_path, bert_dir)`` of a random tiny ASE; weights ~ N(0, std) (LayerNorm around 1)."""
    from transformers import BertConfig

    from fusionaudio.retrieval.ase import AseConfig, AseModel
    from fusionaudio.retrieval.released_layout import to_released

    out = Path(out_dir)
    bert = tiny_bert_dir(out / "bert")
    torch.manual_seed(seed)
    model = AseModel(AseConfig(**TINY), BertConfig.from_pretrained(str(bert)))
    model.frontend.reset_default_kernels()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0, std)
        bn = model.audio_encoder.batch_norm
        bn.running_mean.normal_(-40.0, 5.0)
        bn.running_var.uniform_(50.0, 150.0)
    cfg = {"audio_args": {"sr": 32000, "n_fft": 1024, "hop_length": 320, "f_min": 50, "f_max": 14000,
                          "n_mels": TINY["n_mels"], "max_length": 30, "mono": True},
           "audio_encoder_args": {"type": "transformer", "model": "htsat"},
           "text_encoder_args": {"type": "bert-base-uncased"}, "embed_size": TINY["embed_size"]}
    ckpt = out / "ase.pt"
    torch.save({"model": to_released(model, seed), "config": cfg, "epoch": np.int64(3)}, ckpt)
    return ckpt, bert
