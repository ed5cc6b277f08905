"""``tokenizer.json`` against ``tokenizer.model``: a self-check, and a scored rewrite.

transformers converts a SentencePiece BPE model into merges without the pieces' scores, so
the merges come out in the wrong order (runs of spaces tokenize differently). Here the merges
are ranked by the merged piece's score, as SentencePiece merges, and the result is only
written when it reproduces SentencePiece on :data:`PROBE_TEXTS`.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("fusionaudio.gama.tokenizer")

#: Strings for the tokenizer.json self-check: runs of spaces, tabs, newlines, digits, bytes.
PROBE_TEXTS = (
    "Describe the audio.", "Double  space", "Tabs\tand  double  spaces", "   three leading", "trailing   ",
    "line\n\nbreaks\n", "Digits 12345 and 3.14", "Unicode: café, naïve, 音频, 🎵", "a </s> b <s> c <unk>",
    "### Instruction:\nWhat do you hear?\n\n### Response:\n", "x" * 40, "    four  two   three    four",
)


def _probe(encode, tok) -> list[str]:
    """The probe texts on which ``encode(text) -> ids`` differs from SentencePiece."""
    return [t for t in PROBE_TEXTS if list(encode(t)) != tok.encode_text(t)]


def report_disagreement(path: Path, tok) -> list[str]:
    """Log (warning) where the directory's tokenizer.json disagrees with tokenizer.model."""
    from tokenizers import Tokenizer

    try:
        fast = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - only reported: tokenizer.model is used
        log.warning("%s: unreadable (%s); using tokenizer.model", path, exc)
        return ["<unreadable>"]
    fast.encode_special_tokens = True
    bad = _probe(lambda t: fast.encode(t, add_special_tokens=False).ids, tok)
    if bad:
        log.warning("%s disagrees with tokenizer.model on %d of the self-check strings (e.g. %r); "
                    "using tokenizer.model (SentencePiece)", path, len(bad), bad[0])
    return bad


def scored_tokenizer(sp):
    """A ``tokenizers.Tokenizer`` that merges as SentencePiece BPE does (merges ranked by the
    merged piece's score), or None when the model is not a plain identity-normalised BPE."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    proto = pb.ModelProto.FromString(sp.serialized_model_proto())
    if (proto.trainer_spec.model_type != pb.TrainerSpec.BPE or proto.normalizer_spec.name != "identity"
            or not proto.normalizer_spec.add_dummy_prefix or proto.trainer_spec.treat_whitespace_as_suffix):
        return None
    normal = {p.piece: (i, p.score) for i, p in enumerate(proto.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL}
    ranked = []
    for piece, (_, score) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, normal[piece][0], normal[left][0], left, right))
    ranked.sort()
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    fast = Tokenizer(BPE(vocab=vocab, merges=[(r[3], r[4]) for r in ranked], unk_token=sp.id_to_piece(sp.unk_id()),
                         fuse_unk=True, byte_fallback=proto.trainer_spec.byte_fallback))
    fast.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    fast.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                      decoders.Strip(" ", 1, 0)])
    specials = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    fast.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return fast


def write_scored_tokenizer_json(sp, path: Path, tok) -> bool:
    """Write the scored tokenizer.json if it reproduces SentencePiece; True when written."""
    from tokenizers import processors

    fast = scored_tokenizer(sp)
    if fast is None:
        return False
    fast.encode_special_tokens = True
    bad = _probe(lambda t: fast.encode(t, add_special_tokens=False).ids, tok)
    if bad:
        log.info("not writing %s: the scored BPE differs from SentencePiece on %r", path, bad[0])
        return False
    bos, eos = tok.bos_token, tok.eos_token
    single = ([f"{bos}:0"] if tok.add_bos_token else []) + ["$A:0"] + ([f"{eos}:0"] if tok.add_eos_token else [])
    pair = single + [s.replace("$A", "$B").replace(":0", ":1") for s in single]
    fast.post_processor = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair),
        special_tokens=[(bos, tok.bos_token_id), (eos, tok.eos_token_id)])
    fast.encode_special_tokens = False
    fast.save(str(path))
    return True
