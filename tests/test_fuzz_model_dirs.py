"""Model directories that lie, for every family (GAMA, AudSemThinker, the retrieval models).

* Every file a directory names (shard index entries, tokenizer / processor config files) must stay inside
  it: ``..``, absolute paths, devices and /proc files are refused by name (the message is the same whether
  such a file exists or not); a symlink inside the directory may point anywhere (Hugging Face caches), but
  what it reaches must be a regular file.
* Every size a config gives is checked against the weights (headers only) or a documented bound before a
  module is built: the model classes are replaced by ones that fail if built, so a check that came too late
  fails here instead of building a million layers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz_corpus import HOSTILE_NAMES, HUGE_SIZES
from fusionaudio.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "src" / "fusionaudio" / "assets" / "demo_model"


class _MustNotBuild:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a model was built before its config was checked against its weights")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        cls()

    _from_config = from_pretrained


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, symlinks=True))


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


# --------------------------------------------------------------------------- names
def test_inside_refuses_every_name_that_leaves_the_directory(tmp_path):
    from fusionaudio.loading.files import inside

    for name in HOSTILE_NAMES:
        with pytest.raises(CheckpointError) as err:
            inside(tmp_path / "model", name, "weight shard", "index.json")
        assert repr(name) in str(err.value) and "index.json" in str(err.value), err.value
    for name in ("model-00001-of-00002.safetensors", "sub/x.bin", "..x.bin", "a..b.json"):
        assert inside(tmp_path / "model", name) == tmp_path / "model" / name


@pytest.fixture()
def gama_base(tiny_base_dir, tmp_path) -> Path:
    """A copy of the tiny reference base (two .bin shards + pytorch_model.bin.index.json)."""
    return _copy(tiny_base_dir, tmp_path / "base")


def _rename_in_index(base: Path, old: str, new: str) -> None:
    """Index entries naming the file ``old`` name ``new`` instead."""
    index = base / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: (new if v == old else v) for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))


def test_gama_index_naming_a_shard_outside_is_refused_by_name(gama_base, tmp_path):
    from fusionaudio.gama.loading import load_model

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    index = json.loads((gama_base / "pytorch_model.bin.index.json").read_text())
    shard = previous = sorted(set(index["weight_map"].values()))[0]
    shutil.move(gama_base / shard, elsewhere / shard)  # the real shard, one folder up: it used to load
    messages = {}
    for name in (f"../elsewhere/{shard}", "../elsewhere/missing.bin", *HOSTILE_NAMES):
        _rename_in_index(gama_base, previous, name)
        previous = name
        with pytest.raises(CheckpointError) as err:
            load_model(gama_base)
        msg = str(err.value)
        assert repr(name) in msg and "pytorch_model.bin.index.json" in msg, msg
        assert "not found" not in msg and "No such file" not in msg, msg
        messages[name] = msg.replace(repr(name), "NAME")
    # an existing and a missing file outside get the same message: the error does not probe the disk
    assert messages[f"../elsewhere/{shard}"] == messages["../elsewhere/missing.bin"]


def test_gama_shards_symlinked_elsewhere_load_but_devices_and_proc_do_not(gama_base, tmp_path):
    from fusionaudio.gama.loading import load_model

    blobs = tmp_path / "cache" / "blobs"  # a Hugging Face cache: the directory holds links into blobs/
    blobs.mkdir(parents=True)
    shards = sorted(gama_base.glob("pytorch_model-*.bin"))
    for i, shard in enumerate(shards):
        shutil.move(shard, blobs / f"blob{i}")
        os.symlink(blobs / f"blob{i}", shard)
    model, _ = load_model(gama_base)
    assert not [n for n, t in model.named_parameters() if t.is_meta]
    for target in [t for t in ("/dev/zero", "/proc/self/environ") if Path(t).exists()]:
        shards[0].unlink()
        os.symlink(target, shards[0])
        with pytest.raises(CheckpointError, match=re.escape(f"{shards[0]}: checkpoint file is not a regular file")):
            load_model(gama_base)


@pytest.mark.parametrize("entry", [{"vocab_file": "/etc/passwd"}, {"tokenizer_file": "../../x/tokenizer.json"},
                                   {"fast_tokenizer_files": ["../../x/tokenizer.4.0.json"]}])
def test_gama_tokenizer_config_naming_files_outside_is_refused(gama_base, entry):
    from fusionaudio.gama.tokenizer import load_tokenizer

    _edit_json(gama_base / "tokenizer_config.json", lambda d: d.update(entry))
    (key, value), = entry.items()
    name = value[0] if isinstance(value, list) else value
    with pytest.raises(CheckpointError, match=re.escape(f"({key}) name {name!r}")):
        load_tokenizer(gama_base)


# --------------------------------------------------------------------------- sizes: GAMA
GAMA_REFERENCE_SIZES = [("num_hidden_layers", r"num_hidden_layers is {n} but the weights hold 2"),
                        ("vocab_size", r"vocab_size is {n} but the weights' .*embed_tokens"),
                        ("fusionaudio.audio.specific_depth", r"fusionaudio\.audio\.specific_depth is {n} but"),
                        ("fusionaudio.qformer.num_hidden_layers", r"fusionaudio\.qformer\.num_hidden_layers is {n}"),
                        ("max_position_embeddings", r"max_position_embeddings is {n}; it must be between 1 and "
                                                    r"1,048,576")]
GAMA_LOCAL_SIZES = [("llm.num_hidden_layers", r"llm\.num_hidden_layers is {n} but the weights hold"),
                    ("llm.intermediate_size", r"llm\.intermediate_size is {n} but"),
                    ("audio.unified_depth", r"audio\.unified_depth is {n} but the weights hold 1"),
                    ("qformer.num_query_tokens", r"qformer\.num_query_tokens is {n} but")]


@pytest.mark.parametrize("n", HUGE_SIZES)
def test_gama_config_sizes_are_checked_before_building(gama_base, tmp_path, monkeypatch, n):
    from fusionaudio.gama import loading

    monkeypatch.setattr(loading, "GamaForCausalLM", _MustNotBuild)
    local = _copy(DEMO_MODEL, tmp_path / "local")
    for directory, config, cases in ((gama_base, "config.json", GAMA_REFERENCE_SIZES),
                                     (local, "fusionaudio_config.json", GAMA_LOCAL_SIZES)):
        original = (directory / config).read_text()
        for field, pattern in cases:
            if "between" in pattern and n <= 1 << 20:
                continue  # a bound, not a tensor: 1,000,000 positions are allowed
            (directory / config).write_text(original)
            _edit_json(directory / config, lambda d: _set(d, field, n))
            with pytest.raises(CheckpointError, match=pattern.format(n=n)):
                loading.load_model(directory)
    _edit_json(local / "fusionaudio_config.json", lambda d: (_set(d, "llm.num_hidden_layers", n),
                                                             _set(d, "audio.specific_depth", n)))
    with pytest.raises(CheckpointError) as err:  # one error naming every field
        loading.load_model(local)
    assert "llm.num_hidden_layers" in str(err.value) and "audio.specific_depth" in str(err.value)


def _int_fields(config: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += _int_fields(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(prefix + key)
    return out


def _mutations(config: dict, always: list, n: int, seed: int = 0) -> list:
    """``always`` plus ``n`` seeded (field, value) pairs: every integer field x {0, -1, 10**12, 2x+1}."""
    import random

    pairs = [(f, v) for f in _int_fields(config) for v in (0, -1, 10**12, "2x+1")]
    return always + random.Random(seed).sample(pairs, n)


def _mutate(directory: Path, name: str, original: dict, field: str, value) -> None:
    data = json.loads(json.dumps(original))
    if value == "2x+1":
        *parents, last = field.split(".")
        node = data
        for key in parents:
            node = node[key]
        value = 2 * node[last] + 1
    _set(data, field, value)
    (directory / name).write_text(json.dumps(data))


def test_gama_config_mutations_load_or_name_the_file(tmp_path):
    """Any integer of the config changed: the model loads, or a CheckpointError names the config file;
    never another exception (``audio.patch_size = 0`` was a ZeroDivisionError, a ``pad_token_id`` past the
    vocabulary an AssertionError from torch)."""
    from fusionaudio.gama.loading import load_model

    local = _copy(DEMO_MODEL, tmp_path / "local")
    original = json.loads((local / "fusionaudio_config.json").read_text())
    escaped = []
    for field, value in _mutations(original, [("audio.patch_size", 0), ("llm.pad_token_id", 10**12)], 24):
        _mutate(local, "fusionaudio_config.json", original, field, value)
        try:
            load_model(local)
        except CheckpointError as exc:
            if "fusionaudio_config.json" not in str(exc) and str(local) not in str(exc):
                escaped.append((field, value, f"unnamed: {exc}"))
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            escaped.append((field, value, f"{type(exc).__name__}: {exc}"))
    assert not escaped, escaped


def test_audsem_config_mutations_load_or_name_the_file(thinkers, tmp_path):
    from fusionaudio.audsem.loading import load_thinker

    d = _copy(thinkers["thinker"], tmp_path / "t")
    original = json.loads((d / "config.json").read_text())
    escaped = []
    for field, value in _mutations(original, [("text_config.pad_token_id", 10**12)], 24):
        _mutate(d, "config.json", original, field, value)
        try:
            load_thinker(d)
        except ValueError:  # load_thinker's errors (CheckpointError, or transformers' config validation)
            pass
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            escaped.append((field, value, f"{type(exc).__name__}: {exc}"))
    assert not escaped, escaped


def test_quick_inference_refuses_a_lying_base_directory_with_one_error_line(tmp_path):
    local = _copy(DEMO_MODEL, tmp_path / "local")
    _edit_json(local / "fusionaudio_config.json", lambda d: _set(d, "llm.num_hidden_layers", 1_000_000))
    proc = subprocess.run([sys.executable, str(REPO / "quick_inference.py"), "--base_model", str(local),
                           "--device", "cpu", "--greedy", "--max_tokens", "2"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "llm.num_hidden_layers is 1000000" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- AudSemThinker
@pytest.fixture(scope="module")
def thinkers(tmp_path_factory):
    from fusionaudio.audsem.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("thinkers")
    return {"thinker": build_tiny_checkpoint(root / "thinker"),
            "full": build_tiny_checkpoint(root / "full", full_omni=True)}


@pytest.fixture()
def no_thinker_build(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "Qwen2_5OmniThinkerForConditionalGeneration", _MustNotBuild)


@pytest.mark.parametrize("name", HOSTILE_NAMES[:6])
def test_audsem_index_naming_files_outside_is_refused(thinkers, tmp_path, no_thinker_build, name):
    from fusionaudio.audsem.loading import load_thinker

    d = _copy(thinkers["thinker"], tmp_path / "t")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": name}}))
    with pytest.raises(CheckpointError, match=re.escape(f"weight shard name {name!r}")):
        load_thinker(d)


@pytest.mark.parametrize("layout, field", [
    ("thinker", "text_config.num_hidden_layers"), ("thinker", "audio_config.encoder_layers"),
    ("thinker", "vision_config.depth"), ("thinker", "text_config.vocab_size"),
    ("full", "thinker_config.text_config.num_hidden_layers"), ("full", "thinker_config.audio_config.d_model"),
    ("thinker", "audio_config.max_source_positions")])
def test_audsem_config_sizes_are_checked_before_building(thinkers, tmp_path, no_thinker_build, layout, field):
    from fusionaudio.audsem.loading import load_thinker

    d = _copy(thinkers[layout], tmp_path / "t")
    _edit_json(d / "config.json", lambda c: _set(c, field, 1_000_000))
    with pytest.raises(CheckpointError, match=re.escape(f"{field} is 1000000")):
        load_thinker(d)


def test_audsem_architecture_only_loads_hold_depth_to_a_bound(thinkers, tmp_path, no_thinker_build):
    from fusionaudio.audsem.loading import load_thinker

    d = _copy(thinkers["thinker"], tmp_path / "t")
    _edit_json(d / "config.json", lambda c: _set(c, "text_config.num_hidden_layers", 1_000_000))
    with pytest.raises(CheckpointError, match=r"text_config\.num_hidden_layers is 1000000; it must be between 1 "
                                              r"and 1,024"):
        load_thinker(d, device="meta")


@pytest.mark.parametrize("config, entry", [("tokenizer_config.json", {"vocab_file": "../../etc/passwd"}),
                                           ("tokenizer_config.json", {"fast_tokenizer_files": ["/x/tokenizer.1.0.json"]}),
                                           ("preprocessor_config.json", {"mel_filters_file": "/dev/zero"})])
def test_audsem_processor_configs_naming_files_outside_are_refused(thinkers, tmp_path, config, entry):
    from fusionaudio.audsem.processor import OmniAudioProcessor

    d = _copy(thinkers["thinker"], tmp_path / "t")
    _edit_json(d / config, lambda c: c.update(entry))
    with pytest.raises(CheckpointError, match=re.escape(str(d / config))):
        OmniAudioProcessor.from_pretrained(d)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc on this system")
def test_audsem_adapter_file_linked_to_proc_is_refused(tmp_path):
    from fusionaudio.audsem.adapter import apply_adapter

    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                       "target_modules": ["q_proj"]}))
    os.symlink("/proc/self/environ", d / "adapter_model.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        apply_adapter(None, d)


# --------------------------------------------------------------------------- retrieval
@pytest.fixture(scope="module")
def tiny_ase(tmp_path_factory):
    from fusionaudio.retrieval.tiny_ase import make_tiny_ase

    return make_tiny_ase(tmp_path_factory.mktemp("ase"))


@pytest.mark.parametrize("field, value, pattern", [
    ("num_hidden_layers", 1_000_000, r"num_hidden_layers is 1000000 but the weights hold 1"),
    ("intermediate_size", 10**12, r"intermediate_size is 1000000000000 but"),
    ("max_position_embeddings", 10**12, r"max_position_embeddings is 1000000000000 but")])
def test_ase_text_config_sizes_are_checked_before_building(tiny_ase, tmp_path, monkeypatch, field, value, pattern):
    from fusionaudio.retrieval import ase

    monkeypatch.setattr(ase, "AseModel", _MustNotBuild)
    ckpt, bert = tiny_ase
    bert = _copy(bert, tmp_path / "bert")
    _edit_json(bert / "config.json", lambda c: c.update({field: value}))
    with pytest.raises(CheckpointError, match=pattern):
        ase.load_ase(ckpt, bert)


def test_ase_tokenizer_config_naming_files_outside_is_refused(tiny_ase, tmp_path):
    from fusionaudio.retrieval.ase import load_ase

    ckpt, bert = tiny_ase
    bert = _copy(bert, tmp_path / "bert")
    _edit_json(bert / "tokenizer_config.json", lambda c: c.update({"vocab_file": "/etc/passwd"}))
    with pytest.raises(CheckpointError, match=re.escape("(vocab_file) name '/etc/passwd'")):
        load_ase(ckpt, bert)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    from fusionaudio.pipeline.tiny_models import build_clap

    out = tmp_path_factory.mktemp("clap")
    build_clap(out)
    return out


@pytest.mark.parametrize("field, value, pattern", [
    ("text_config.num_hidden_layers", 1_000_000, r"text_config\.num_hidden_layers is 1000000 but the weights hold 1"),
    ("audio_config.depths", [1_000_000, 1], r"audio_config\.depths\[0\] is 1000000 but the weights hold 1"),
    ("audio_config.depths", [1, 1, 1], r"audio_config\.depths \(number of stages\) is 3 but the weights hold 2"),
    ("audio_config.spec_size", 10**9, r"audio_config\.spec_size is 1000000000; it must be between")])
def test_clap_config_sizes_are_checked_before_building(tiny_clap, tmp_path, monkeypatch, field, value, pattern):
    import transformers

    from fusionaudio.retrieval.clap import ClapDualEncoder

    monkeypatch.setattr(transformers, "ClapModel", _MustNotBuild)
    d = _copy(tiny_clap, tmp_path / "clap")
    _edit_json(d / "config.json", lambda c: _set(c, field, value))
    with pytest.raises(CheckpointError, match=pattern):
        ClapDualEncoder(str(d))


def test_clap_index_naming_files_outside_is_refused(tiny_clap, tmp_path, monkeypatch):
    import transformers

    from fusionaudio.retrieval.clap import ClapDualEncoder

    monkeypatch.setattr(transformers, "ClapModel", _MustNotBuild)
    d = _copy(tiny_clap, tmp_path / "clap")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"logit_scale_a": "/etc/shadow"}}))
    with pytest.raises(CheckpointError, match=re.escape("weight shard name '/etc/shadow'")):
        ClapDualEncoder(str(d))
