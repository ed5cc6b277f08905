"""Tiny models built offline: a SentencePiece tokenizer trained here and reference-format
model directories with random weights (exactly the reference's key names).

Used by the tests, the benchmarks and the demo-model recipe. Nothing here touches the network.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from fusionaudio.gama.config import GamaConfig
from fusionaudio.gama.modeling import GamaForCausalLM
from fusionaudio.gama.keymap import REFERENCE_TRAINED_SUBSTRINGS, local_to_reference, reference_only_entries
from fusionaudio.gama.export import write_reference_config
from fusionaudio.gama.prompts import build_prompt

_WORDS = (
    "a an the of and then with in on at is are was were this that there audio sound sounds clip "
    "describe caption question answer what which how many when where who why yes no one two three four "
    "tone tones chirp chirps rising falling noise burst bursts white low high mid pitched pitch loud quiet "
    "soft click clicks train speech music dog bark car engine bird birds rain water wind door bell man woman "
    "first second last before after begins ends followed by background foreground short long silence"
).split()


def default_corpus() -> list[str]:
    """Prompt-shaped sentences over a small vocabulary (deterministic)."""
    texts = []
    for i, w in enumerate(_WORDS):
        sentence = " ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(12)).capitalize() + "."
        texts.append(build_prompt(f"Describe the {w} in this audio.") + sentence)
        texts.append(build_prompt(f"What {w} do you hear?", input=f"{w} {i}") + f"There is a {w}. " + sentence)
    return texts


def pad_sentencepiece(model: bytes, size: int) -> bytes:
    """Append UNUSED pieces (never produced from text) until the model has ``size`` pieces,
    so that the tokenizer matches an embedding with ``size`` rows exactly."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto.FromString(model)
    if len(proto.pieces) > size:
        raise ValueError(f"the trained tokenizer has {len(proto.pieces)} pieces, more than {size}")
    low = min(p.score for p in proto.pieces)
    for i in range(len(proto.pieces), size):
        proto.pieces.add(piece=f"<unused_{i}>", score=low - 1.0, type=pb.ModelProto.SentencePiece.UNUSED)
    return proto.SerializeToString()


def train_tokenizer(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 512):
    """Train a Llama-style SentencePiece BPE tokenizer (byte fallback, unk=0 bos=1 eos=2) of
    exactly ``vocab_size`` pieces (at most 512 learned, the rest UNUSED) and save it as a
    Llama-2 tokenizer directory; returns the loaded tokenizer."""
    import sentencepiece as spm

    from fusionaudio.gama.tokenizer import load_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts or default_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=min(512, vocab_size),
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(pad_sentencepiece(buf.getvalue(), vocab_size))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
    }))
    tok = load_tokenizer(out)
    tok.save_pretrained(str(out))  # adds a tokenizer.json merged by score (checked against SentencePiece)
    return tok


def _random_like(shape, dtype: str, name: str, gen: torch.Generator) -> torch.Tensor:
    if dtype == "int64":
        return torch.arange(shape[-1]).expand(*shape).clone()
    if name.endswith("inv_freq"):
        dim = shape[0] * 2
        return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    return torch.randn(shape, generator=gen) * 0.02


def reference_state_dict(model: GamaForCausalLM, seed: int = 0, peft: bool = False) -> dict[str, torch.Tensor]:
    """The model's weights under the reference's names, plus the known-unused tensors a
    reference file also holds (random values). ``peft=True`` gives the peft-wrapped names."""
    gen = torch.Generator().manual_seed(seed)
    state = {local_to_reference(k, peft=peft): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for name, shape, dtype in reference_only_entries(model.config):
        state[("base_model.model." if peft else "") + name] = _random_like(shape, dtype, name, gen)
    return state


def reference_finetuned_state(model: GamaForCausalLM, lora_naming: str = "default") -> dict[str, torch.Tensor]:
    """What the reference's training saves: the peft-wrapped state dict filtered to the
    trained names. ``lora_naming="peft"`` drops ``.default`` as peft's adapter files do."""
    state = {local_to_reference(k, peft=True): v.detach().clone().contiguous()
             for k, v in model.state_dict().items() if ".base_layer." not in k}
    state = {k: v for k, v in state.items() if any(s in k for s in REFERENCE_TRAINED_SUBSTRINGS)}
    if lora_naming == "peft":
        state = {k.replace(".default.weight", ".weight"): v for k, v in state.items()}
    return state


def _save_shards(state: dict[str, torch.Tensor], out: Path, weights: str, num_shards: int) -> None:
    names = sorted(state)
    shards = [names[i::num_shards] for i in range(num_shards)]
    suffix, index_name, stem = (
        (".safetensors", "model.safetensors.index.json", "model")
        if weights == "safetensors" else (".bin", "pytorch_model.bin.index.json", "pytorch_model")
    )
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        fname = f"{stem}-{i:05d}-of-{num_shards:05d}{suffix}"
        part = {k: state[k] for k in keys}
        if weights == "safetensors":
            from safetensors.torch import save_file

            save_file(part, str(out / fname), metadata={"format": "pt"})
        else:
            torch.save(part, out / fname)
        weight_map.update({k: fname for k in keys})
    (out / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def make_reference_base_dir(
    out_dir: str | Path,
    config: GamaConfig | str = "tiny",
    seed: int = 0,
    weights: str = "bin",
    num_shards: int = 2,
    tokenizer_texts: list[str] | None = None,
    llm_init_std: float | None = None,
    init=None,
) -> Path:
    """Write a reference-format base directory with random weights and a tiny tokenizer.

    ``llm_init_std`` re-draws the Llama matrices with a larger spread so that a random
    model's outputs depend visibly on its inputs (useful in tests). ``init(model)``, if given,
    runs on the fresh model before its weights are written (the demo pre-trains its encoder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = GamaConfig.from_name(config) if isinstance(config, str) else config
    train_tokenizer(out, tokenizer_texts, vocab_size=int(config.llm["vocab_size"]))
    torch.manual_seed(seed)
    model = GamaForCausalLM(config)
    if llm_init_std is not None:
        with torch.no_grad():
            for name, p in model.llm.named_parameters():
                if p.dim() == 2:
                    p.normal_(0.0, llm_init_std)
    if init is not None:
        init(model)
    _save_shards(reference_state_dict(model, seed=seed), out, weights, num_shards)
    write_reference_config(config, out)
    return out
