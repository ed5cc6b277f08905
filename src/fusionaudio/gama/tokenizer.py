"""The Llama-2 tokenizer, exactly: ``[bos] + SentencePiece(tokenizer.model).encode(text)``.

:func:`load_tokenizer` reads a base directory (reference Llama-2 layout, ``fusionaudio
convert`` output, training output, the bundled demo model). When ``tokenizer.model`` is there
it is the source of truth: texts are encoded by ``sentencepiece`` itself, whatever
``tokenizer.json`` or ``legacy`` say (transformers' own conversion orders the BPE merges
without the pieces' scores and splits runs of spaces differently). A ``tokenizer.json`` that
disagrees with ``tokenizer.model`` on a self-check is reported in the log.

User text never becomes control tokens: a literal ``</s>`` in a question or answer is
encoded as the characters ``<``, ``/``, ``s``, ``>`` (as SentencePiece does), not as EOS. The
reference's slow ``LlamaTokenizer`` turned such strings into control ids; this is a
deliberate deviation (documented in docs/tokenizer.md).

Padding: pad id 0 on the left, as the reference sets it (``pad_token_id = 0``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from transformers.tokenization_python import PreTrainedTokenizer

from fusionaudio.errors import CheckpointError
from fusionaudio.loading.files import check_named_files, check_path, read_json_object, refuse_remote_code

log = logging.getLogger("fusionaudio.gama.tokenizer")

SP_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"

#: What the Llama-2 ``tokenizer_config.json`` sets (used when a directory has none).
LLAMA2_SETTINGS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False}
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast")

class TokenizerError(CheckpointError):
    """A tokenizer directory that cannot be loaded exactly: names the directory and the problem."""


def _token_content(value, path: Path, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{path}: {field} must be a string or an AddedToken object, got {value!r}")


class SentencePieceTokenizer(PreTrainedTokenizer):
    """A transformers tokenizer whose encoding is ``sentencepiece`` itself.

    Special tokens are never matched in text (``split_special_tokens=True``); BOS/EOS are added
    as ids according to ``add_bos_token``/``add_eos_token``."""

    vocab_files_names = {"vocab_file": SP_MODEL}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 add_bos_token=True, add_eos_token=False, **kwargs):
        import sentencepiece as spm

        self.vocab_file = str(vocab_file)
        self.sp_model = spm.SentencePieceProcessor(model_file=self.vocab_file)
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        kwargs["split_special_tokens"] = True
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("padding_side", "left")
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, **kwargs)

    # -- vocabulary -----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(int(index))

    # -- encoding: SentencePiece, never a control token from text ---------------------
    def tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def encode_text(self, text: str) -> list[int]:
        """``SentencePiece.encode(text)`` (no BOS/EOS)."""
        return list(self.sp_model.encode(text))

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        return out if token_ids_1 is None else out + bos + list(token_ids_1) + eos

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return (int(self.add_bos_token) + int(self.add_eos_token)) * (2 if pair else 1)

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        one = lambda ids: [1] * self.add_bos_token + [0] * len(ids) + [1] * self.add_eos_token  # noqa: E731
        return one(token_ids_0) + (one(token_ids_1) if token_ids_1 is not None else [])

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    # -- decoding: SentencePiece ---------------------------------------------------------
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode_pieces(list(tokens))

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise TokenizerError(f"token id(s) {bad[:10]} outside the tokenizer's {size} pieces")
        special = set(self.all_special_ids)
        pieces, run = [], []
        for i in ids:
            if i in special or self.sp_model.is_control(i) or self.sp_model.is_unused(i):
                if skip_special_tokens:
                    continue
                pieces.append(self.sp_model.decode(run))
                pieces.append(self.sp_model.id_to_piece(i))
                run = []
            else:
                run.append(i)
        pieces.append(self.sp_model.decode(run))
        return "".join(pieces)

    # -- saving: a standard Llama-2 tokenizer directory -------------------------------------
    def settings(self) -> dict:
        return {"tokenizer_class": "LlamaTokenizer", "bos_token": self.bos_token, "eos_token": self.eos_token,
                "unk_token": self.unk_token, "pad_token": None, "add_bos_token": self.add_bos_token,
                "add_eos_token": self.add_eos_token, "legacy": True, "clean_up_tokenization_spaces": False,
                "model_max_length": int(self.model_max_length) if self.model_max_length < 1e12 else None}

    def save_pretrained(self, save_directory, **kwargs) -> tuple[str, ...]:
        """Write ``tokenizer.model`` (the source of truth) + ``tokenizer_config.json`` +
        a ``tokenizer.json`` built from the pieces' scores (only if it reproduces
        SentencePiece on the self-check), so that other tools load the same ids."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        target = out / SP_MODEL
        if not target.exists() or not target.samefile(self.vocab_file):
            shutil.copyfile(self.vocab_file, target)
        settings = {k: v for k, v in self.settings().items() if v is not None or k == "pad_token"}
        (out / TOKENIZER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": self.bos_token, "eos_token": self.eos_token, "unk_token": self.unk_token}, indent=2) + "\n")
        written = [str(target), str(out / TOKENIZER_CONFIG), str(out / "special_tokens_map.json")]
        from fusionaudio.gama.tokenizer_json import write_scored_tokenizer_json

        stale = out / TOKENIZER_JSON
        if write_scored_tokenizer_json(self.sp_model, stale, self):
            written.append(str(stale))
        elif stale.exists():
            stale.unlink()  # a tokenizer.json that disagrees with tokenizer.model must not stay
        return tuple(written)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        target = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + SP_MODEL)
        if not target.exists() or not target.samefile(self.vocab_file):
            shutil.copyfile(self.vocab_file, target)
        return (str(target),)


# -- loading -------------------------------------------------------------------------------
def _settings(directory: Path) -> dict:
    """Validated tokenizer settings of a directory (Llama-2's when it has no tokenizer_config.json)."""
    path = directory / TOKENIZER_CONFIG
    if not path.is_file():
        log.info("%s: no %s; using Llama-2's settings (BOS added, no EOS)", directory, TOKENIZER_CONFIG)
        return dict(LLAMA2_SETTINGS)
    cfg = read_json_object(check_path(path, TOKENIZER_CONFIG))
    refuse_remote_code(cfg, path)
    check_named_files(cfg, directory, path, "tokenizer file")  # e.g. fast_tokenizer_files, vocab_file
    cls = cfg.get("tokenizer_class")
    if cls is not None and cls not in _LLAMA_CLASSES:
        raise TokenizerError(f"{path}: tokenizer_class {cls!r} is not a Llama SentencePiece tokenizer "
                             f"(expected one of {list(_LLAMA_CLASSES)})")
    out = {}
    for field in ("bos_token", "eos_token", "unk_token"):
        out[field] = _token_content(cfg.get(field, LLAMA2_SETTINGS[field]), path, field)
        if out[field] is None:
            raise TokenizerError(f"{path}: {field} is null; a Llama tokenizer needs one")
    for field in ("add_bos_token", "add_eos_token"):
        value = cfg.get(field, LLAMA2_SETTINGS[field])
        if not isinstance(value, bool):
            raise TokenizerError(f"{path}: {field} must be true or false, got {value!r}")
        out[field] = value
    if "model_max_length" in cfg and isinstance(cfg["model_max_length"], int):
        out["model_max_length"] = cfg["model_max_length"]
    out["_added"] = cfg.get("added_tokens_decoder") or {}
    if not isinstance(out["_added"], dict):
        raise TokenizerError(f"{path}: added_tokens_decoder must be an object")
    return out


def _check_special_tokens(sp, settings: dict, directory: Path) -> None:
    for field in ("bos_token", "eos_token", "unk_token"):
        piece = settings[field]
        pid = sp.piece_to_id(piece)
        if sp.id_to_piece(pid) != piece:
            raise TokenizerError(f"{directory}: {field} {piece!r} is not a piece of {SP_MODEL}")
    for key, token in settings.get("_added", {}).items():
        content = _token_content(token, directory / TOKENIZER_CONFIG, f"added_tokens_decoder[{key}]")
        try:
            index = int(key)
        except ValueError:
            raise TokenizerError(f"{directory / TOKENIZER_CONFIG}: added token id {key!r} is not an integer") from None
        if index >= sp.get_piece_size() or sp.id_to_piece(index) != content:
            raise TokenizerError(
                f"{directory / TOKENIZER_CONFIG}: added token {content!r} (id {index}) is not piece {index} of "
                f"{SP_MODEL} ({sp.get_piece_size()} pieces); added tokens beyond the SentencePiece model are "
                "not supported")


def _load_sentencepiece(directory: Path) -> SentencePieceTokenizer:
    settings = _settings(directory)
    check_path(directory / SP_MODEL, "tokenizer model")
    try:
        tok = SentencePieceTokenizer(directory / SP_MODEL, **{k: v for k, v in settings.items() if not k.startswith("_")})
    except TokenizerError:
        raise
    except Exception as exc:  # not a SentencePiece model, truncated file, ...
        raise TokenizerError(f"{directory / SP_MODEL}: cannot load the SentencePiece model: {exc}") from exc
    _check_special_tokens(tok.sp_model, settings, directory)
    if (directory / TOKENIZER_JSON).is_file():
        from fusionaudio.gama.tokenizer_json import report_disagreement

        check_path(directory / TOKENIZER_JSON, TOKENIZER_JSON)
        report_disagreement(directory / TOKENIZER_JSON, tok)
    return tok


def _load_tokenizer_json(directory: Path):
    """A directory with ``tokenizer.json`` but no ``tokenizer.model`` (e.g. the bundled demo
    model): that file defines the ids; special tokens are still never matched in text."""
    from transformers import AutoTokenizer

    if not (directory / TOKENIZER_CONFIG).is_file():
        raise TokenizerError(f"{directory}: {TOKENIZER_JSON} without {TOKENIZER_CONFIG} (and no {SP_MODEL}); "
                             "cannot tell the BOS/EOS settings")
    settings = _settings(directory)
    check_path(directory / TOKENIZER_JSON, TOKENIZER_JSON)
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False,
                                            split_special_tokens=True)
    except Exception as exc:
        raise TokenizerError(f"{directory}: cannot load {TOKENIZER_JSON}: {exc}") from exc
    for field in ("bos_token", "eos_token", "unk_token"):
        if getattr(tok, field) != settings[field] or getattr(tok, field + "_id") is None:
            raise TokenizerError(f"{directory}: {field} {settings[field]!r} is not a token of {TOKENIZER_JSON}")
    ids = tok("a")["input_ids"]
    if settings["add_bos_token"] != (bool(ids) and ids[0] == tok.bos_token_id):
        raise TokenizerError(f"{directory}: {TOKENIZER_JSON} does not add BOS as {TOKENIZER_CONFIG} says")
    return tok


def load_tokenizer(base_dir):
    """The base directory's tokenizer: ``[bos] + SentencePiece(tokenizer.model).encode(text)``
    for every text, pad id 0, left padding (as the reference sets it up).

    Errors (:class:`TokenizerError`) name the directory and what is missing or wrong."""
    directory = Path(base_dir)
    if not directory.is_dir():
        raise TokenizerError(f"tokenizer directory not found: {directory}")
    if (directory / SP_MODEL).is_file():
        tok = _load_sentencepiece(directory)
    elif (directory / TOKENIZER_JSON).is_file():
        tok = _load_tokenizer_json(directory)
    else:
        raise TokenizerError(f"{directory}: no tokenizer ({SP_MODEL}, the Llama-2 SentencePiece model, "
                             f"or {TOKENIZER_JSON})")
    tok.pad_token = tok.convert_ids_to_tokens(0)  # the reference sets pad_token_id = 0
    tok.padding_side = "left"
    return tok


def check_vocab_size(tokenizer, rows: int, source) -> None:
    """Every token id must have an embedding row. More rows than tokens is a padded vocabulary
    (``resize_token_embeddings(pad_to_multiple_of=...)``): it loads, and generation never emits the
    extra ids (``FusionAudioInference`` masks them)."""
    if len(tokenizer) > int(rows):
        raise TokenizerError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                             f"has only {rows} rows (vocab_size): ids {rows}..{len(tokenizer) - 1} have no embedding")
