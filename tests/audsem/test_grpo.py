"""AudSemThinker GRPO on a tiny random Qwen2.5-Omni (CPU): records, the audio in rollouts and log-prob passes,
rewards reaching the trainer, the CLI's checkpoints (loadable, exactly resumable) and an SFT adapter start."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio.audsem.grpo import generation_schedule, grpo, main, reward_functions
from fusionaudio.audsem.grpo_data import load_clip, load_grpo_records, prepend_instruction, question_text
from fusionaudio.audsem.processor import OmniAudioProcessor
from fusionaudio.audsem.tiny import build_tiny_checkpoint
from fusionaudio.records import RecordError

QUESTION = "Is it a tone or a noise?"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    ckpt = build_tiny_checkpoint(root / "omni", full_omni=True, seed=0)
    audio = root / "audio"
    audio.mkdir()
    t = np.arange(32000)
    sf.write(audio / "tone.wav", (0.3 * np.sin(t * 0.06)).astype(np.float32), 16000)  # 2 s each: same token count
    sf.write(audio / "noise.wav", (0.1 * np.random.default_rng(0).standard_normal(2 * 22050)).astype(np.float32), 22050)
    sf.write(audio / "blip.wav", np.zeros(800, np.float32), 16000)  # 800 samples: under 1,000
    (audio / "broken.wav").write_bytes(b"not audio")
    rows = [{"audio_id": "audio/tone.wav", "question": QUESTION, "choices": ["tone", "noise"], "answer": "A"},
            {"audio_id": "audio/noise.wav", "question": QUESTION, "choices": ["tone", "noise"], "answer": "B"}]
    data = root / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"root": root, "ckpt": ckpt, "data": data, "rows": rows, "proc": OmniAudioProcessor.from_pretrained(ckpt)}


def _write(env, name, rows):
    path = env["root"] / name
    path.write_text(json.dumps(rows))
    return path


# ------------------------------------------------------------------------------------------ records

def test_generation_schedule_holds_whole_groups_and_whole_steps():
    # upstream's README: 3 processes x 2 completions = one group of 6 per optimizer step
    assert generation_schedule(2, 1, 6, processes=3) == {"steps_per_generation": 1, "optimizer_steps": 1, "prompts": 1}
    # upstream's defaults on one process: a group of 4 spread over 2 optimizer steps
    assert generation_schedule(2, 1, 4) == {"steps_per_generation": 2, "optimizer_steps": 2, "prompts": 1}
    assert generation_schedule(4, 2, 4) == {"steps_per_generation": 2, "optimizer_steps": 1, "prompts": 2}
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        generation_schedule(2, 1, 1)


def test_questions_get_lettered_choices_and_the_instruction_its_length():
    assert question_text({"question": "Q?", "choices": ["a", "b"]}) == "Q?\nChoices:\nA. a\nB. b"
    assert question_text({"question": "Q?", "choices": {"X": "a", "Y": "b"}}) == "Q?\nChoices:\nX. a\nY. b"
    assert question_text({"instruction": "Say.", "input": "Briefly."}) == "Say.\nBriefly."
    text = prepend_instruction(semantic_elements=False, target_length=25)
    assert "approximately 25 words" in text and "{" not in text and "<semantic_elements>" not in text
    assert "<semantic_elements>" in prepend_instruction(semantic_elements=True, target_length=25)


def test_bad_records_are_named_and_skipped_only_when_asked(env):
    good = env["rows"][0]
    rows = [good,
            {**good, "answer": ""},
            {**good, "audio_id": "audio/missing.wav"},
            {**good, "audio_id": "audio/broken.wav"},
            {**good, "audio_id": "audio/blip.wav"},
            {**good, "choices": ["a", 3]},
            {"audio_id": "audio/tone.wav", "answer": "A"},
            "just text"]
    path = _write(env, "bad.json", rows)
    with pytest.raises(RecordError) as err:
        load_grpo_records(path, env["proc"])
    msg = str(err.value)
    assert "7 of 8 records are invalid" in msg and "--skip_bad_records" in msg
    for i, what in [(1, "'answer'"), (2, "missing.wav"), (3, "broken.wav"), (4, "800 samples"), (5, "'choices'"),
                    (6, "'question'"), (7, "not an object")]:
        assert f"record {i}: " in msg and what in msg.split(f"record {i}: ")[1].split("\n")[0], (i, msg)
    kept = load_grpo_records(path, env["proc"], skip_bad=True)
    assert [r.index for r in kept] == [0] and kept[0].answer == "A" and kept[0].user_text.endswith("B. noise")


def test_a_prompt_is_never_cut_to_max_prompt_length(env):
    records = load_grpo_records(env["data"], env["proc"])
    assert len(records) == 2
    with pytest.raises(RecordError, match=r"record 0: the prompt is \d+ tokens \(50 of them audio\), over max_prompt"):
        load_grpo_records(env["data"], env["proc"], max_prompt_length=60)


# --------------------------------------------------------------------------------- audio in the trainer

@pytest.fixture(scope="module")
def sharp_ckpt(env):
    """The tiny checkpoint with its lm_head x10: at the random init (std 0.02, 64 dims) no logit can exceed
    about 1.3, too flat a policy for a few GRPO steps to move measurably."""
    from safetensors.torch import load_file, save_file

    out = env["root"] / "sharp"
    shutil.copytree(env["ckpt"], out)
    weights = load_file(str(out / "model.safetensors"))
    weights = {k: v * 10 if k.endswith("lm_head.weight") else v for k, v in weights.items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _trainer(env, tmp_path, rewards=None, ckpt=None, **config):
    from datasets import Dataset
    from trl import GRPOConfig

    from fusionaudio.audsem.grpo import _build_policy
    from fusionaudio.audsem.grpo_data import dataset_rows
    from fusionaudio.audsem.grpo_trainer import AudioGRPOTrainer

    rows = dataset_rows(load_grpo_records(env["data"], env["proc"]))
    model, peft_config = _build_policy(ckpt or env["ckpt"], None, torch.float32, "cpu", dict(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="q_proj,v_proj"))
    settings = dict(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=12, use_cpu=True, bf16=False, report_to="none", beta=0.01,
                    remove_unused_columns=False, activation_checkpointing=False, logging_steps=1, seed=0)
    args = GRPOConfig(**{**settings, **config})
    return AudioGRPOTrainer(model=model, reward_funcs=rewards or reward_functions(), args=args,
                            train_dataset=Dataset.from_list(rows), peft_config=peft_config, audio_processor=env["proc"])


def test_rollouts_and_log_probs_get_each_rows_clip(env, tmp_path):
    trainer = _trainer(env, tmp_path, temperature=0.05)
    config = trainer.model.config
    placeholders = {config.audio_token_index, config.audio_start_token_id, config.audio_end_token_id,
                    config.image_token_index, config.video_token_index}
    assert placeholders <= set(trainer.generation_config.suppress_tokens)  # never sampled: they'd miss features
    handed = []
    generate = trainer.model.generate

    def spy(*args, **kwargs):
        handed.append(kwargs.get("input_features"))
        return generate(*args, **kwargs)

    trainer.model.generate = spy
    rows = [dict(trainer.train_dataset[i]) for i in (0, 1)]
    outputs = []
    for row in rows:  # the same prompt with two clips, the same sampling seed
        torch.manual_seed(0)
        outputs.append(trainer._generate_and_score_completions([row] * 4))
    tone, noise = outputs
    assert torch.equal(tone["prompt_ids"], noise["prompt_ids"])  # the text is the same; only the audio differs
    for fed, row in zip(handed, rows):
        want = env["proc"].audio_features([load_clip(row["audio_path"], env["proc"])])["input_features"][0]
        assert fed is not None and fed.shape[0] == 4 and all(torch.equal(f, want) for f in fed)
    assert not torch.equal(tone["completion_ids"], noise["completion_ids"])  # the rollouts heard the clip

    ids = torch.cat([tone["prompt_ids"], tone["completion_ids"]], 1)
    mask = torch.cat([tone["prompt_mask"], tone["completion_mask"]], 1)
    keep = tone["completion_ids"].size(1)

    def logps(features_of):
        with trainer._rows_audio(features_of["input_features"], features_of["feature_attention_mask"]):
            return trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep, batch_size=3)[0]

    assert torch.equal(logps(tone), logps(tone))
    assert (logps(tone) - logps(noise)).abs().max() > 1e-3  # the same completion scored with the other clip
    with pytest.raises(RuntimeError, match="without the clips' audio"):
        trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)


def test_vllm_rollouts_are_refused(env, tmp_path):
    with pytest.raises(ValueError, match="use_vllm is not supported: vLLM rollouts receive the prompt text only"):
        _trainer(env, tmp_path, use_vllm=True)


def _even_share(trainer, env):
    """Probability of an even token id as the first completion token, averaged over both records' prompts."""
    from fusionaudio.audsem.grpo_data import clean_messages

    rows = [trainer.train_dataset[i] for i in (0, 1)]
    proc = env["proc"]
    texts = [proc.apply_chat_template(clean_messages(r["prompt"])) for r in rows]
    inputs = proc(texts, audio=[load_clip(r["audio_path"], proc) for r in rows])
    with torch.no_grad():
        probs = torch.softmax(trainer.model(**inputs).logits[:, -1], -1)
    return float(probs[:, 0::2].sum(-1).mean())


def test_rewards_reach_the_trainer_and_steer_the_policy(env, sharp_ckpt, tmp_path):
    calls = []

    def even_tokens(completions, completion_ids, answer, record, **kwargs):  # share of even token ids
        rewards = [sum(t % 2 == 0 for t in ids) / max(1, len(ids)) for ids in completion_ids]
        calls.append((completions, answer, record, rewards))
        return rewards

    trainer = _trainer(env, tmp_path, rewards=[even_tokens], ckpt=sharp_ckpt, max_steps=8, learning_rate=5e-2)
    before = _even_share(trainer, env)
    trainer.train()
    assert len(calls) == 8
    for completions, answers, records, _ in calls:
        assert len(completions) == 4 and all(c[0]["role"] == "assistant" for c in completions)
        assert len(set(records)) == 1 and answers == [["A", "B"][records[0]]] * 4
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert [h["rewards/even_tokens/mean"] for h in logged] == pytest.approx([np.mean(c[3]) for c in calls])
    assert [h["reward"] for h in logged] == pytest.approx([np.mean(c[3]) for c in calls])
    after = _even_share(trainer, env)
    assert after > before + 0.05, (before, after)  # the advantages pushed the policy towards the reward


# ------------------------------------------------------------------------------------ the command

def _run(env, out, **kw):
    settings = dict(max_steps=4, save_steps=2, logging_steps=1, lr=5e-3, max_completion_length=8, seed=0,
                    use_length_constraint=True, target_length=3)  # the length reward varies: advantages are not 0
    return grpo(str(env["ckpt"]), str(env["data"]), str(out), **{**settings, **kw})


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(env):
    """A 4-step run with checkpoints at steps 2 and 4."""
    out = env["root"] / "full"
    return out, _run(env, out)


def test_grpo_command_trains_saves_and_resumes_exactly(env, trained, tmp_path):
    from fusionaudio.audsem.export import export_merged
    from fusionaudio.audsem.inference import AudSemThinkerInference
    from fusionaudio.audsem.loading import load_thinker

    full, result = trained
    assert result["steps"] == 4 and result["checkpoints"] == ["checkpoint-2", "checkpoint-4"]
    assert len(result["rewards"]) == 2  # one generation batch per 2 optimizer steps (batch 2, 4 generations)
    log = [json.loads(line) for line in (full / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    assert all("rewards/length/mean" in e and "rewards/accuracy/mean" in e for e in log if "reward" in e)
    weights = _adapter(full)
    assert weights and all("lora_" in k for k in weights)  # the adapter only
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    halfway = _adapter(full / "checkpoint-2")
    assert any(not torch.equal(halfway[k], weights[k]) for k in weights)  # steps 3 and 4 changed the adapter

    # a second run resumes from checkpoint-2 and ends where the uninterrupted one ended, bit for bit
    part = tmp_path / "part"
    part.mkdir()
    for name in ("train_config.json", "train_log.jsonl"):
        shutil.copy(full / name, part / name)
    shutil.copytree(full / "checkpoint-2", part / "checkpoint-2")
    resumed = _run(env, part, resume_from_checkpoint="last")
    assert resumed["steps"] == 4
    again = _adapter(part)
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)

    # the adapter and a checkpoint load like an SFT adapter, and merge
    tuned = AudSemThinkerInference(env["ckpt"], model_path=full)
    assert isinstance(tuned.predict(str(env["root"] / "audio" / "tone.wav"), QUESTION, max_new_tokens=3), str)
    AudSemThinkerInference(env["ckpt"], model_path=full / "checkpoint-2")
    merged = export_merged(env["ckpt"], full, tmp_path / "merged")
    proc, wave = env["proc"], load_clip(env["root"] / "audio" / "tone.wav", env["proc"])
    inputs = proc([tuned.prompt(QUESTION, True)], audio=[wave])
    with torch.no_grad():
        want = tuned.model(**inputs).logits
        got = load_thinker(merged)(**inputs).logits
    assert torch.allclose(want, got, atol=1e-4)


def test_resume_and_restart_mistakes_are_refused(env, trained, tmp_path, capsys):
    out = trained[0]
    base = ["--base_model_path", str(env["ckpt"]), "--data_path", str(env["data"]), "--output_dir", str(out),
            "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1", "--lr", "5e-3", "--seed", "0",
            "--max_completion_length", "8", "--use_length_constraint", "--target_length", "3"]
    assert main(base) == 2
    assert "holds checkpoints of an earlier run" in capsys.readouterr().err
    assert main(base + ["--resume_from_checkpoint", "last", "--num_generations", "2"]) == 2
    assert "cannot resume exactly with changed options: num_generations 4 -> 2" in capsys.readouterr().err
    assert main(base + ["--resume_from_checkpoint", "last"]) == 1  # the options match, but nothing is left to do
    assert "no optimizer step was taken (the run was already at step 4)" in capsys.readouterr().err
    assert main(base + ["--resume_from_checkpoint", str(out / "checkpoint-9")]) == 2
    assert "checkpoint-9 not found" in capsys.readouterr().err
    assert main([*base[:4], "--data_path", str(_write(env, "empty.json", [])), "--output_dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")


def test_rollout_sampling_options_reach_the_rollouts(env, trained, tmp_path, capsys):
    def zero_std(out):
        return [e["frac_reward_zero_std"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                if "reward" in e]

    assert min(zero_std(trained[0])) < 1.0  # sampled at TRL's defaults, a group's length rewards differ
    out = tmp_path / "top_k_1"
    _run(env, out, top_k=1, save_steps=0)  # only the likeliest token: a prompt's completions are all the same
    assert zero_std(out) == [1.0, 1.0]
    base = ["--base_model_path", str(env["ckpt"]), "--data_path", str(env["data"]), "--output_dir", str(tmp_path / "x")]
    for flags, message in ((["--temperature", "0"], "temperature must be > 0: GRPO compares sampled completions"),
                           (["--top_p", "1.5"], "top_p must be in (0, 1], got 1.5"),
                           (["--top_k", "-1"], "top_k must be >= 0")):
        assert main(base + flags) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_grpo_continues_an_sft_adapter_against_it_as_the_reference(env, tmp_path):
    from fusionaudio.audsem.loading import load_thinker
    from fusionaudio.audsem.train import add_lora

    sft = tmp_path / "sft"
    model = add_lora(load_thinker(env["ckpt"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    model.save_pretrained(str(sft))
    start = _adapter(sft)
    out = tmp_path / "grpo"
    result = _run(env, out, model_path=str(sft), max_steps=2)
    assert result["steps"] == 2
    tuned = _adapter(out)
    assert tuned.keys() == start.keys()
    moved = max(float((tuned[k] - start[k]).abs().max()) for k in start)
    assert 0 < moved < 0.05  # trained on from the SFT weights, not from a fresh adapter
    reference = _adapter(out / "checkpoint-2" / "ref")  # TRL's frozen copy: the SFT adapter
    assert all(torch.equal(reference[k], start[k]) for k in start)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(e.get("kl", 0) > 0 for e in log)  # measured against the SFT policy, which the run leaves
