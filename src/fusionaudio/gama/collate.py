"""Training examples: tokenisation with prompt masking, micro-batch planning, padding.

Everything here is a pure function of its arguments (no model, no audio), so the data
order of a run is a function of ``(seed, epoch)`` and a resumed run replays it exactly.

Tokenisation follows the reference trainer: the full text is
``template(instruction, input) + output``, truncated to ``cutoff_len`` tokens (BOS
included), and EOS is appended when the text is shorter than ``cutoff_len`` and does not
already end with it. ``train_on_inputs=False`` sets the labels of the prompt tokens to
-100 (completion-only loss). The first token (BOS) is never a target: no text position
precedes it, and under left padding a pad position would otherwise be trained to predict
it (as happens in the reference), making the loss depend on the padding side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fusionaudio.records import is_text_only
from fusionaudio.gama.data import resolve_audio_path
from fusionaudio.gama.prompts import build_prompt

IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenised record: ``input_ids``, ``labels`` (-100 = no loss) and its audio file
    (``None`` for text-only records). ``index`` is the record's position in the data."""

    input_ids: list[int]
    labels: list[int]
    audio: Path | None
    index: int

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def _tokenize(tokenizer, text: str, cutoff_len: int, add_eos: bool) -> list[int]:
    ids = tokenizer(text, truncation=True, max_length=cutoff_len, padding=False)["input_ids"]
    if add_eos and len(ids) < cutoff_len and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return ids


def tokenize_record(tokenizer, record: dict, cutoff_len: int = 256, train_on_inputs: bool = True,
                    template: str = "alpaca_short") -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one record, as the reference builds them.

    The full text always gets EOS (the reference's ``tokenize`` default; its
    ``add_eos_token`` option only changes how it measures the prompt, which comes to
    the same prompt length). The first label is always -100; with
    ``train_on_inputs=False`` the first ``len(tokenize(prompt))`` labels are.
    """
    prompt = build_prompt(record["instruction"], record.get("input") or None, template=template)
    ids = _tokenize(tokenizer, prompt + record["output"], cutoff_len, add_eos=True)
    labels = [IGNORE_INDEX] + ids[1:]
    if not train_on_inputs:
        n_prompt = len(_tokenize(tokenizer, prompt, cutoff_len, add_eos=False))
        labels = [IGNORE_INDEX] * n_prompt + labels[n_prompt:]
    return ids, labels[: len(ids)]


def make_examples(tokenizer, records: list[dict], data_path, cutoff_len: int = 256,
                  train_on_inputs: bool = True, template: str = "alpaca_short") -> list[Example]:
    """Tokenise validated records; relative ``audio_id`` paths resolve against ``data_path``."""
    out = []
    for i, rec in enumerate(records):
        ids, labels = tokenize_record(tokenizer, rec, cutoff_len, train_on_inputs, template)
        audio = None if is_text_only(rec.get("audio_id")) else resolve_audio_path(rec["audio_id"], data_path)
        out.append(Example(ids, labels, audio, i))
    return out


def plan_micro_batches(examples: list[Example], micro_batch_size: int, seed: int, epoch: int,
                       group_by_length: bool = False, shuffle: bool = True,
                       group_by_audio: bool = False) -> list[list[int]]:
    """The epoch's micro-batches as lists of example positions.

    Examples are shuffled with a generator seeded by ``(seed, epoch)``; the model takes
    all-or-none audio per forward, so examples with audio and text-only examples are
    batched apart, and the micro-batches of both kinds are then interleaved in a seeded
    order. ``group_by_length`` sorts each window of 50 micro-batches by length (longest
    first), as transformers' length-grouped sampler does, to reduce padding.
    ``group_by_audio`` keeps the examples of one clip together (clips in shuffled order),
    so a micro-batch encodes fewer distinct clips (the trainer encodes each clip once per
    micro-batch): much faster when every clip has several questions.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(examples), generator=gen).tolist() if shuffle else list(range(len(examples)))
    if group_by_audio:
        first_seen = {}
        for i in order:
            first_seen.setdefault(examples[i].audio, len(first_seen))
        order = sorted(order, key=lambda i: first_seen[examples[i].audio])  # stable: keeps the shuffle
    batches = []
    for with_audio in (True, False):
        part = [i for i in order if examples[i].has_audio == with_audio]
        if group_by_length and not group_by_audio:
            window = 50 * micro_batch_size
            part = [i for s in range(0, len(part), window)
                    for i in sorted(part[s:s + window], key=lambda j: -len(examples[j].input_ids))]
        batches += [part[s:s + micro_batch_size] for s in range(0, len(part), micro_batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


def collate(examples: list[Example], pad_token_id: int, padding_side: str = "left",
            pad_to_multiple_of: int | None = 8) -> dict[str, torch.Tensor]:
    """Pad to the longest example (rounded up to ``pad_to_multiple_of``): ``input_ids``
    (``pad_token_id``), ``attention_mask`` (0 on padding) and ``labels`` (-100 on padding),
    on the left or the right. The model prepends the audio tokens itself and derives
    positions from the mask, so both sides give the same loss."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(e.input_ids) for e in examples)
    if pad_to_multiple_of:
        length = math.ceil(length / pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        cols = slice(length - n, length) if padding_side == "left" else slice(0, n)
        ids[row, cols] = torch.tensor(e.input_ids)
        mask[row, cols] = 1
        labels[row, cols] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
