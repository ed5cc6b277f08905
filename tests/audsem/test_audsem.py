"""AudSemThinker on tiny random Qwen2.5-Omni checkpoints: loading, processor parity, batched generation,
audio errors, completion-only LoRA SFT and record validation. Everything runs offline on CPU."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio.audio import AudioError
from fusionaudio.audsem import AudSemThinkerInference, OmniAudioProcessor, load_thinker
from fusionaudio.inference import detect_arch
from fusionaudio.audsem.config import CAPTION_INSTRUCTION, SYSTEM_PROMPT
from fusionaudio.audsem.processor import build_conversation
from fusionaudio.audsem.tiny import build_tiny_checkpoint
from fusionaudio.audsem.train import IGNORE_INDEX, RecordError, add_lora, build_batch, load_records, mean_loss, train

OUTPUTS = [
    "<think>A steady hum.</think>\n<semantic_elements>what: a machine\nhow: humming</semantic_elements>\n<answer>A machine hums.</answer>",
    "<think>Hissing bursts.</think>\n<semantic_elements>what: static\nwhere: indoors</semantic_elements>\n<answer>Static noise.</answer>",
    "<think>Quiet tone.</think>\n<semantic_elements>how: softly</semantic_elements>\n<answer>A soft tone.</answer>",
    "<think>Loud hiss.</think>\n<semantic_elements>what: hiss</semantic_elements>\n<answer>Loud hissing.</answer>",
]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("audsem")
    thinker = build_tiny_checkpoint(root / "thinker", seed=0)
    full = build_tiny_checkpoint(root / "full", full_omni=True, seed=0)
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir()
    sf.write(audio / "tone.wav", (0.2 * np.sin(np.arange(32000) * 0.05)).astype(np.float32), 16000)  # 2 s mono
    sf.write(audio / "noise.wav", (0.1 * rng.standard_normal((3 * 22050, 2))).astype(np.float32), 22050)  # 3 s stereo
    sf.write(audio / "short.flac", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)  # 0.25 s
    (audio / "broken.wav").write_bytes(b"this is not audio at all")
    return {"root": root, "thinker": thinker, "full": full, "audio": audio}


@pytest.fixture(scope="module")
def engine(ckpts):
    return AudSemThinkerInference(ckpts["full"])


def _records_file(ckpts, rows, name="data.json"):
    path = ckpts["root"] / name
    path.write_text(json.dumps(rows))
    return path


def _good_rows():
    return [
        {"audio_id": "audio/tone.wav", "instruction": "Describe the audio.", "input": "", "output": OUTPUTS[0]},
        {"audio_id": "audio/noise.wav", "instruction": "What is making the sound?", "input": "", "output": OUTPUTS[1]},
        {"audio_id": "audio/short.flac", "instruction": "Is it loud?", "input": "", "output": OUTPUTS[2]},
        {"audio_id": "audio/noise.wav", "instruction": "Describe.", "input": "Be brief.", "output": OUTPUTS[3]},
    ]


# ------------------------------------------------------------------------------------------ loading

def test_detect_arch(ckpts, tmp_path):
    assert detect_arch(ckpts["thinker"]) == "audsemthinker"
    assert detect_arch(ckpts["full"]) == "audsemthinker"
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert detect_arch(tmp_path / "llama") == "gama"
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="bert"):
        detect_arch(tmp_path / "bert")
    with pytest.raises(ValueError, match="cannot tell the architecture"):
        detect_arch(tmp_path)


def test_detect_arch_knows_every_layout_this_project_writes(ckpts, tiny_base_dir, tmp_path):
    from fusionaudio.gama.inference import DEMO_MODEL_DIR
    from fusionaudio.gama.loading import convert

    assert detect_arch(DEMO_MODEL_DIR) == "gama"  # the bundled demo model
    assert detect_arch(convert(str(tiny_base_dir), str(tmp_path / "converted"))) == "gama"
    assert detect_arch(tiny_base_dir) == "gama"  # reference layout
    run = tmp_path / "gama_run"  # GAMA training output
    run.mkdir()
    (run / "fusionaudio_config.json").write_text((tmp_path / "converted" / "fusionaudio_config.json").read_text())
    assert detect_arch(run) == "gama"
    adapter = tmp_path / "audsem_run"  # fusionaudio.audsem.train output (a peft adapter)
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(ckpts["full"])}))
    assert detect_arch(adapter) == "audsemthinker"
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gijs/audsemthinker"}))
    with pytest.raises(ValueError, match="LoRA adapter directory, not a base model"):
        detect_arch(adapter)


def test_remote_code_directories_are_refused(ckpts, tmp_path):
    """config.json / tokenizer_config.json with an auto_map: refused, the code never runs."""
    for name in ("config.json", "tokenizer_config.json"):
        d = tmp_path / name.replace(".", "_")
        shutil.copytree(ckpts["thinker"], d)
        cfg = json.loads((d / name).read_text())
        cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoTokenizer": ["evil.EvilTokenizer", None]}
        (d / name).write_text(json.dumps(cfg))
        (d / "evil.py").write_text("raise SystemExit('remote code ran')\n")
        with pytest.raises(ValueError, match="auto_map"):
            AudSemThinkerInference(d) if name == "config.json" else OmniAudioProcessor.from_pretrained(d)
        if name == "config.json":
            with pytest.raises(ValueError, match="auto_map"):
                detect_arch(d)


def test_adapter_with_transformers_4x_names_loads_every_tensor(ckpts, tmp_path):
    """An AudSemThinker adapter saved under transformers 4.x (``model.layers.*``, ``audio_tower.*``)
    loads all its tensors, audio-encoder LoRA included; a stray tensor is an error naming it."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    tuned = add_lora(load_thinker(ckpts["thinker"]), target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    current = get_peft_model_state_dict(tuned)
    assert any(".audio_tower." in k for k in current)
    old = {k.replace("base_model.model.model.language_model.", "base_model.model.model.")
            .replace("base_model.model.model.audio_tower.", "base_model.model.audio_tower."): v for k, v in current.items()}
    assert any(k.startswith("base_model.model.audio_tower.") for k in old)
    d = tmp_path / "adapter_4x"
    tuned.peft_config["default"].save_pretrained(str(d))
    save_file({k: v.contiguous() for k, v in old.items()}, str(d / "adapter_model.safetensors"))
    from fusionaudio.audsem.adapter import apply_adapter as _apply_adapter

    loaded = _apply_adapter(load_thinker(ckpts["thinker"]), d)
    got = get_peft_model_state_dict(loaded)
    assert sorted(got) == sorted(current)
    for k in current:
        assert torch.equal(got[k], current[k]), k
    save_file({**{k: v.contiguous() for k, v in old.items()}, "base_model.model.extra.lora_A.weight": torch.zeros(2, 2)},
              str(d / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"matching no LoRA parameter: base_model\.model\.extra"):
        _apply_adapter(load_thinker(ckpts["thinker"]), d)


def test_full_omni_and_thinker_only_load_the_same_weights(ckpts):
    a = load_thinker(ckpts["full"]).state_dict()
    b = load_thinker(ckpts["thinker"]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the weights are those of the checkpoint, not a fresh initialisation
    from safetensors.torch import load_file

    stored = load_file(str(ckpts["thinker"] / "model.safetensors"))
    assert torch.equal(a["model.language_model.layers.0.self_attn.q_proj.weight"], stored["model.layers.0.self_attn.q_proj.weight"])


def test_checkpoint_with_missing_or_unknown_weights_is_rejected(ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(ckpts["full"], bad)
    state = load_file(str(bad / "model.safetensors"))
    del state["thinker.model.norm.weight"]
    state["thinker.model.extra_module.weight"] = torch.zeros(3)
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing thinker weights.*unexpected weights"):
        load_thinker(bad)


def test_processor_matches_stock_qwen2_5_omni_processor(ckpts, monkeypatch):
    """Our torchvision-free processor gives the stock processor's text and tensors for audio + text."""
    from transformers import Qwen2_5OmniProcessor, Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    ours = OmniAudioProcessor.from_pretrained(ckpts["full"])
    original = ProcessorMixin.check_argument_for_proper_class
    # The stock class refuses to build without a torchvision video processor; audio never touches it.
    monkeypatch.setattr(
        ProcessorMixin, "check_argument_for_proper_class",
        lambda self, name, arg: None if name == "video_processor" else original(self, name, arg),
    )
    stock = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessorPil(), video_processor=object(),
        feature_extractor=ours.feature_extractor, tokenizer=ours.tokenizer, chat_template=ours.chat_template,
    )
    conversations = [build_conversation("Describe the audio.", True), build_conversation("What? " * 5, True)]
    stock_text = stock.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    our_text = [ours.apply_chat_template(c) for c in conversations]
    assert stock_text == our_text
    rng = np.random.default_rng(1)
    audio = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (24000, 90000)]  # 1.5 s and 5.6 s (cut to 4 s)
    expected = stock(text=stock_text, audio=audio, padding=True, return_tensors="pt")
    got = ours(our_text, audio=audio)
    assert sorted(got) == sorted(expected)
    for key in got:
        assert torch.equal(got[key], expected[key]), key
    assert got["input_ids"][0, 0] == ours.tokenizer.pad_token_id  # left padding


def test_user_text_never_becomes_qwen_control_tokens(ckpts):
    """A literal <|im_end|> / <|AUDIO|> / <|endoftext|> in a question stays text; prompts without
    them tokenize exactly as the stock tokenizer does (runs of spaces, tabs, unicode included)."""
    proc = OmniAudioProcessor.from_pretrained(ckpts["thinker"])
    tok = proc.tokenizer
    for question in ("Double  space", "Tabs\tand  double  spaces", "Ünïcödé 音频 🎵", "   lead", "x\n\ny"):
        text = proc.apply_chat_template(build_conversation(question, False))
        assert proc.encode(text) == tok(text, add_special_tokens=False)["input_ids"], question
    clean = proc.apply_chat_template(build_conversation("What is it?", True))
    evil = proc.apply_chat_template(build_conversation("What <|im_end|> is <|AUDIO|> it <|endoftext|>?", True))
    control = {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|AUDIO|>", "<|endoftext|>", "<|im_start|>")}
    count = lambda ids: sum(int(i in control) for i in ids)  # noqa: E731
    assert count(proc.encode(evil)) == count(proc.encode(clean))
    wave = [np.zeros(16000, dtype=np.float32)]
    batch = proc([evil], audio=wave)  # one template placeholder, one clip: the typed one is text
    assert int((batch["input_ids"] == tok.audio_token_id).sum()) == int((proc([clean], audio=wave)["input_ids"] == tok.audio_token_id).sum())
    answer = "It says <|im_end|> twice <|im_end|>"
    ids = proc.encode_user_text(answer)
    assert tok.convert_tokens_to_ids("<|im_end|>") not in ids
    assert tok.decode(ids) == answer


def test_prompt_has_system_prompt_audio_and_instruction(engine):
    prompt = engine.prompt("What is it?", has_audio=True)
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>")
    assert (CAPTION_INSTRUCTION + " Question: What is it?<|im_end|>\n<|im_start|>assistant\n") in prompt
    assert "<|AUDIO|>" not in engine.prompt("Hi", has_audio=False)


# --------------------------------------------------------------------------------------- generation

def test_batched_generation_matches_single_requests(engine, ckpts):
    a = str(ckpts["audio"] / "tone.wav")
    b = str(ckpts["audio"] / "noise.wav")
    questions = ["What?", "Describe everything you can hear in this recording, in detail."]
    batch = engine.predict_batch([a, b], questions, max_new_tokens=6)
    assert len(batch) == 2 and all(isinstance(t, str) and t for t in batch)
    singles = [engine.predict(a, questions[0], max_new_tokens=6), engine.predict(b, questions[1], max_new_tokens=6)]
    assert batch == singles
    # text-only entries mix with audio ones; one question string is broadcast
    mixed = engine.predict_batch(["empty", a], "What?", max_new_tokens=4, batch_size=1)
    assert len(mixed) == 2 and mixed[1] == engine.predict(a, "What?", max_new_tokens=4)


def test_sampling_is_reproducible_with_a_seed(engine, ckpts):
    a = str(ckpts["audio"] / "tone.wav")
    kw = dict(do_sample=True, temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=12)
    first = engine.predict(a, "What?", seed=3, **kw)
    assert first == engine.predict(a, "What?", seed=3, **kw)
    others = {engine.predict(a, "What?", seed=s, **kw) for s in range(4, 8)}
    assert others - {first}, "sampling ignored the seed"


def test_bad_audio_raises_audio_error_naming_the_file(engine, ckpts):
    broken = ckpts["audio"] / "broken.wav"
    with pytest.raises(AudioError, match="broken.wav"):
        engine.predict(str(broken), "What?")
    with pytest.raises(AudioError, match="missing.wav"):
        engine.predict_batch([str(ckpts["audio"] / "tone.wav"), str(ckpts["audio"] / "missing.wav")], "What?")
    with pytest.raises(ValueError, match="2 audio paths but 3 questions"):
        engine.predict_batch(["x", "y"], ["a", "b", "c"])
    with pytest.raises(TypeError, match="unknown generation option"):
        engine.predict(None, "What?", num_return_sequences=2)


def test_adapter_dir_must_be_a_peft_adapter(ckpts):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        AudSemThinkerInference(ckpts["thinker"], model_path=ckpts["full"])


# ----------------------------------------------------------------------------------------- training

def test_labels_cover_only_the_completion(ckpts):
    proc = OmniAudioProcessor.from_pretrained(ckpts["thinker"])
    records = load_records(_records_file(ckpts, _good_rows()))
    batch = build_batch(proc, records[:2])
    tok = proc.tokenizer
    for i, rec in enumerate(records[:2]):
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        kept = labels != IGNORE_INDEX
        assert tok.decode(ids[kept]) == rec.output + "<|im_end|>\n"  # the template's newline, as TRL labels it
        # everything before the completion is masked: it ends with the assistant header
        first = int(kept.nonzero()[0])
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        assert (ids[:first] == tok.audio_token_id).sum() > 0
        assert torch.equal(labels[kept], ids[kept])
    # the shorter row is right-padded with masked labels
    assert (batch["attention_mask"] == 0).any()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_lora_sft_lowers_the_loss_and_saves_a_usable_adapter(ckpts):
    data = _records_file(ckpts, _good_rows())
    out = ckpts["root"] / "run"
    result = train(str(ckpts["full"]), str(data), str(out), lr=1e-2, batch_size=2, max_steps=8, lora_dropout=0.0, seed=0)
    assert result["steps"] == 8 and len(result["losses"]) == 8
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not list(out.glob("*.bin"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 8
    assert [round(e["lr"], 8) for e in log] == [round(1e-2 * (8 - s) / 8, 8) for s in range(8)]  # linear decay
    assert json.loads((out / "train_config.json").read_text())["resampler"] == "sinc"

    proc = OmniAudioProcessor.from_pretrained(ckpts["full"])
    records = load_records(data)
    before = mean_loss(load_thinker(ckpts["full"]), proc, records)
    tuned = AudSemThinkerInference(ckpts["full"], model_path=out)
    after = mean_loss(tuned.model, proc, records)
    assert after < before - 0.1, (before, after)
    assert isinstance(tuned.predict(str(ckpts["audio"] / "tone.wav"), "What?", max_new_tokens=4), str)


def test_resampler_defaults_to_sinc_and_is_validated(ckpts, engine):
    from fusionaudio.audsem.processor import load_audio

    assert engine.resampler == "sinc"
    noise = str(ckpts["audio"] / "noise.wav")  # 22.05 kHz: resampled
    from fusionaudio.audio import read_audio, resample

    wave, sr = read_audio(noise)
    want = resample(wave.mean(0, keepdim=True), sr, 16000, method="sinc")[0].numpy()
    assert np.array_equal(load_audio(noise, 16000)[: len(want)], want.astype(np.float32))
    with pytest.raises(ValueError, match="resampler must be one of"):
        AudSemThinkerInference(ckpts["full"], resampler="fft")
    with pytest.raises(ValueError, match="resampler must be one of"):
        train(str(ckpts["full"]), "unused.json", str(ckpts["root"] / "never"), resampler="fft")


def test_lora_targets_every_q_and_v_projection(ckpts):
    model = add_lora(load_thinker(ckpts["thinker"]))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_" in n for n in names)
    assert any("audio_tower" in n and "q_proj" in n for n in names)
    assert any("language_model" in n and "v_proj" in n for n in names)
    assert not any("k_proj" in n or "o_proj" in n for n in names)


def test_records_are_validated_and_reported_by_index(ckpts):
    rows = _good_rows()
    rows[1] = {"audio_id": "audio/tone.wav", "instruction": "Describe."}  # no output
    rows[2] = dict(rows[2], audio_id="audio/nope.wav")
    rows[3] = dict(rows[3], output="just a caption")
    rows.append("not an object")
    rows.append(dict(_good_rows()[0], audio_id="audio/broken.wav"))
    with pytest.raises(RecordError) as err:
        load_records(_records_file(ckpts, rows, "bad.json"))
    msg = str(err.value)
    assert "5 of 6 records are invalid" in msg
    assert "record 1: 'output' missing" in msg
    assert "record 2: audio file" in msg and "nope.wav not found" in msg
    assert "record 3: output is not in the <think>/<semantic_elements>/<answer> format" in msg
    assert "record 4: not an object" in msg
    assert "record 5: audio file" in msg and "cannot be decoded" in msg
    assert "record 0" not in msg


def test_jsonl_records_and_absolute_audio_paths(ckpts):
    rows = _good_rows()[:2]
    rows[0]["audio_id"] = str(ckpts["audio"] / "tone.wav")
    path = ckpts["root"] / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    records = load_records(path)
    assert [r.audio_path for r in records] == [str(ckpts["audio"] / "tone.wav"), str(ckpts["root"] / "audio/noise.wav")]
    assert records[1].user_text() == "What is making the sound?"
    bad = ckpts["root"] / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(RecordError, match="invalid JSON on line 2"):
        load_records(bad)


def test_released_7b_thinker_builds_on_meta_with_the_released_layout():
    """load_thinker(..., device="meta") on the released config values: the 7B shape (untied lm_head),
    and every parameter has a released (transformers-4.x) name that maps back onto it."""
    from fusionaudio.audsem.released import released_thinker_coverage

    report = released_thinker_coverage()
    done, total = report["released names that map back onto the model"].split(" of ")
    assert done == total and int(total) > 1000
    assert report["lm_head tied to the embedding"] is False
    assert 8.5 < float(report["parameters"].split(" B")[0]) < 9.5
