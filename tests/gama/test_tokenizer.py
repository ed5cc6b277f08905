"""fusionaudio.load_tokenizer: exactly [bos] + SentencePiece(tokenizer.model).encode(text)."""

from __future__ import annotations

import io
import json
import logging
import random

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from fusionaudio import load_tokenizer
from fusionaudio.gama.tiny import default_corpus
from fusionaudio.errors import CheckpointError
from fusionaudio.gama.tokenizer import TokenizerError, check_vocab_size
from fusionaudio.gama.tokenizer_json import PROBE_TEXTS

TEXTS = list(PROBE_TEXTS) + [
    "Tabs\tand  double  spaces", "Double  space", "  ", " ", "", "end with space ", "\t\tindent",
    "What  sound   is    this?", "<s>", "</s>", "<unk>", "answer </s> more", "Ünïcödé ☃ 🎶 音频 テスト",
    "### Instruction:\nDescribe  the  audio.\n\n### Response:\n", "1234567890  00", "a" * 3 + "  " + "b" * 5,
]


def _edited_model(seed: int = 0) -> bytes:
    """A SentencePiece BPE model (Llama settings) whose scores were shuffled, so that score
    order differs from id order: merges ranked by id (transformers' conversion without scores)
    then tokenize differently from SentencePiece."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(default_corpus() + ["a  b   c    d     e", "x\ty  z"] * 5), model_writer=buf,
        model_type="bpe", vocab_size=400, hard_vocab_limit=False, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    proto = pb.ModelProto.FromString(buf.getvalue())
    normal = [p for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL]
    scores = [p.score for p in normal]
    random.Random(seed).shuffle(scores)
    for p, s in zip(normal, scores):
        p.score = s
    assert [p.score for p in normal] != sorted((p.score for p in normal), reverse=True)
    return proto.SerializeToString()


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    path.write_bytes(_edited_model())
    return path


def _variant(tmp_path, sp_model, name, config=None, with_json=False):
    d = tmp_path / name
    d.mkdir()
    (d / "tokenizer.model").write_bytes(sp_model.read_bytes())
    if config is not None:
        (d / "tokenizer_config.json").write_text(json.dumps(config))
    if with_json:  # what transformers itself writes: merges converted without the scores
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(d), local_files_only=True).save_pretrained(str(tmp_path / (name + "_hf")))
        (d / "tokenizer.json").write_text((tmp_path / (name + "_hf") / "tokenizer.json").read_text())
    return d


LLAMA_CONFIG = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                "add_bos_token": True, "add_eos_token": False}


@pytest.mark.parametrize("name,config,with_json", [
    ("legacy_true", {**LLAMA_CONFIG, "legacy": True}, False),
    ("legacy_false", {**LLAMA_CONFIG, "legacy": False}, False),
    ("legacy_absent", LLAMA_CONFIG, False),
    ("legacy_false_with_hf_json", {**LLAMA_CONFIG, "legacy": False}, True),
    ("no_tokenizer_config", None, False),
    ("added_tokens_object_form", {**LLAMA_CONFIG, "bos_token": {"content": "<s>", "lstrip": False},
                                  "added_tokens_decoder": {"1": {"content": "<s>", "special": True}}}, False),
])
def test_every_directory_variant_is_sentencepiece_exactly(tmp_path, sp_model, name, config, with_json, caplog):
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    d = _variant(tmp_path, sp_model, name, config, with_json)
    with caplog.at_level(logging.INFO, logger="fusionaudio.gama.tokenizer"):
        tok = load_tokenizer(d)
    for text in TEXTS:
        want = [sp.bos_id()] + sp.encode(text)
        assert tok(text)["input_ids"] == want, text
        assert tok.encode(text) == want, text
        assert tok(text, add_special_tokens=False)["input_ids"] == want[1:], text
    batch = tok(["a", "Double  space"], padding=True, return_tensors="pt")
    assert tok.pad_token_id == 0 and tok.padding_side == "left"
    assert batch["input_ids"][0, 0].item() == 0 and batch["attention_mask"][0, 0].item() == 0
    assert batch["input_ids"][0, -2:].tolist() == [sp.bos_id()] + sp.encode("a")
    if config is None:
        assert "Llama-2's settings" in caplog.text
    if with_json:
        assert "disagrees with tokenizer.model" in caplog.text


def test_the_fixture_exposes_the_unscored_conversion(tmp_path, sp_model):
    """transformers' own loading of a directory without tokenizer.json gets some text wrong:
    the variants above would fail if load_tokenizer fell back to it."""
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    d = _variant(tmp_path, sp_model, "hf", LLAMA_CONFIG)
    hf = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    wrong = [t for t in TEXTS if hf(t)["input_ids"] != [1] + sp.encode(t)]
    assert wrong


def test_user_text_never_becomes_control_tokens(tmp_path, sp_model):
    tok = load_tokenizer(_variant(tmp_path, sp_model, "ctl", LLAMA_CONFIG))
    ids = tok("The answer is </s> and <s> and <unk>.")["input_ids"]
    assert ids[0] == 1 and 1 not in ids[1:] and 2 not in ids and 0 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "The answer is </s> and <s> and <unk>."


def test_training_labels_keep_a_literal_eos_as_text(tmp_path, sp_model):
    from fusionaudio.gama.collate import tokenize_record

    tok = load_tokenizer(_variant(tmp_path, sp_model, "train", LLAMA_CONFIG))
    record = {"instruction": "Say </s>", "input": "<s>", "output": "It ends with </s> here", "audio_id": "x.wav"}
    ids, labels = tokenize_record(tok, record, cutoff_len=512)
    assert ids.count(2) == 1 and ids[-1] == 2
    assert ids.count(1) == 1 and ids[0] == 1


def test_saved_directory_reloads_to_the_same_ids(tmp_path, sp_model):
    from tokenizers import Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    tok = load_tokenizer(_variant(tmp_path, sp_model, "src", {**LLAMA_CONFIG, "legacy": False}))
    out = tmp_path / "saved"
    tok.save_pretrained(str(out))
    again = load_tokenizer(out)
    for text in TEXTS:
        assert again(text)["input_ids"] == [1] + sp.encode(text), text
    # a tokenizer.json merged by score is written (it reproduces SentencePiece on the self-check)
    fast = Tokenizer.from_file(str(out / "tokenizer.json"))
    fast.encode_special_tokens = True
    for text in TEXTS:
        assert fast.encode(text).ids == [1] + sp.encode(text), text


def test_convert_output_reloads_to_the_same_ids(tiny_base_dir, tmp_path):
    from fusionaudio.gama.loading import convert

    before = load_tokenizer(tiny_base_dir)
    out = convert(str(tiny_base_dir), str(tmp_path / "converted"))
    after = load_tokenizer(out)
    for text in TEXTS:
        assert after(text)["input_ids"] == before(text)["input_ids"], text


def test_tokenizer_json_only_directory_never_matches_control_tokens(tmp_path):
    """The bundled demo model's tokenizer.json alone (its tokenizer.model removed): still no control ids from text."""
    import shutil

    from fusionaudio.gama.inference import DEMO_MODEL_DIR

    json_only = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL_DIR, json_only, ignore=shutil.ignore_patterns("tokenizer.model", "*.safetensors"))
    assert not (json_only / "tokenizer.model").exists() and (json_only / "tokenizer.json").is_file()
    tok = load_tokenizer(json_only)
    ids = tok("a </s> b <s>")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids and tok.bos_token_id not in ids[1:]
    assert tok.pad_token_id == 0 and tok.padding_side == "left"


@pytest.mark.parametrize("case,message", [
    ("empty", "no tokenizer"),
    ("auto_map", "auto_map"),
    ("malformed", "cannot read JSON"),
    ("not_object", "expected a JSON object"),
    ("bad_bos", "bos_token '<bos>' is not a piece"),
    ("bad_flag", "add_bos_token must be true or false"),
    ("foreign_class", "is not a Llama SentencePiece tokenizer"),
    ("added_beyond", "added tokens beyond the SentencePiece model are not supported"),
    ("json_without_config", "without tokenizer_config.json"),
    ("truncated_model", "cannot load the SentencePiece model"),
])
def test_incomplete_or_wrong_directories_are_refused_by_name(tmp_path, sp_model, case, message):
    d = tmp_path / case
    d.mkdir()
    if case not in ("empty", "json_without_config", "truncated_model"):
        (d / "tokenizer.model").write_bytes(sp_model.read_bytes())
    config = {
        "auto_map": {**LLAMA_CONFIG, "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}},
        "bad_bos": {**LLAMA_CONFIG, "bos_token": "<bos>"},
        "bad_flag": {**LLAMA_CONFIG, "add_bos_token": "yes"},
        "foreign_class": {**LLAMA_CONFIG, "tokenizer_class": "T5Tokenizer"},
        "added_beyond": {**LLAMA_CONFIG, "added_tokens_decoder": {"100000": {"content": "<pad>"}}},
    }.get(case)
    if config is not None:
        (d / "tokenizer_config.json").write_text(json.dumps(config))
    if case == "malformed":
        (d / "tokenizer_config.json").write_text('{"bos_token": "<s>",')
    if case == "not_object":
        (d / "tokenizer_config.json").write_text("[1, 2]")
    if case == "json_without_config":
        (d / "tokenizer.json").write_text("{}")
    if case == "truncated_model":
        (d / "tokenizer.model").write_bytes(sp_model.read_bytes()[:100])
        (d / "tokenizer_config.json").write_text(json.dumps(LLAMA_CONFIG))
    if case == "auto_map":
        (d / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(CheckpointError, match=message) as err:  # TokenizerError or the shared reader's error
        load_tokenizer(d)
    assert str(d) in str(err.value)


def test_every_token_needs_an_embedding_row_and_a_padded_vocabulary_is_fine(tmp_path, sp_model):
    tok = load_tokenizer(_variant(tmp_path, sp_model, "v", LLAMA_CONFIG))
    check_vocab_size(tok, len(tok), "x")
    check_vocab_size(tok, len(tok) + 64, "x")  # padded vocabulary (pad_to_multiple_of): loads
    with pytest.raises(TokenizerError, match=f"has {len(tok)} tokens but the model's embedding has only "
                                             f"{len(tok) - 1} rows"):
        check_vocab_size(tok, len(tok) - 1, tmp_path)
