"""``TrainArgs``: every option of ``python -m fusionaudio.train`` (the reference trainer's, plus ours) as one
dataclass; the command line, presets and ``train(**options)`` all go through it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class TrainArgs:
    """Options of a GAMA / FusionAudio fine-tuning run (defaults: the reference's)."""

    # model / data
    base_model: str = field(default="", metadata={"help": "base model directory, or a fine-tuned checkpoint to start from (a .pth/.bin/.safetensors file, a checkpoint-N folder or a finished run's folder)."})
    data_path: str = field(default="", metadata={"help": 'JSON or JSONL records {audio_id, instruction, input, output}.'})
    output_dir: str = field(default="", metadata={"help": 'checkpoints, logs, loss curve and the final trained tensors.'})
    base_dir: str | None = field(default=None, metadata={"help": "the base directory when base_model is a checkpoint (default: the one recorded in the checkpoint's training_args.json)."})
    # training hyper-parameters (the reference's defaults)
    batch_size: int = field(default=128, metadata={"help": 'global batch (all processes)'})
    micro_batch_size: int = field(default=4, metadata={"help": 'examples per forward pass'})
    num_epochs: float = field(default=3, metadata={"help": 'passes over the data (fractions allowed); max_steps > 0 overrides it'})
    learning_rate: float = field(default=3e-4, metadata={"help": 'peak learning rate (AdamW, linear warm-up then decay)'})
    cutoff_len: int = field(default=256, metadata={"help": 'maximum tokens per example (prompt + answer, BOS/EOS included).'})
    val_set_size: int = field(default=2000, metadata={"help": 'records held out for the eval loss (every eval_steps steps).'})
    warmup_steps: int = field(default=100, metadata={"help": 'linear warm-up steps'})
    # LoRA ("none", "[]" or the reference's "['dummy']": no LoRA)
    lora_r: int = field(default=8, metadata={"help": 'LoRA rank'})
    lora_alpha: int = field(default=16, metadata={"help": 'LoRA alpha'})
    lora_dropout: float = field(default=0.05, metadata={"help": 'LoRA dropout'})
    lora_target_modules: tuple | list | str = field(default=("q_proj", "v_proj"), metadata={"help": 'modules LoRA adapts; "none", "[]" or "[\'dummy\']" (the reference\'s stage-1 spelling): no LoRA at all.'})
    # LLM
    train_on_inputs: bool = field(default=True, metadata={"help": 'False = loss on the answer only (prompt labels are -100).'})
    add_eos_token: bool = field(default=False, metadata={"help": 'append EOS to every answer'})
    group_by_length: bool = field(default=False, metadata={"help": 'batch examples of similar length (less padding).'})
    group_by_audio: bool = field(default=False, metadata={"help": 'keep the questions of one clip in one micro-batch.'})
    # trackers (off by default; nothing reaches the network unless asked)
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | all (accelerate's trackers; logs in output_dir/runs)."})
    wandb_project: str = field(default="gama", metadata={"help": 'wandb project (with --report_to wandb)'})
    wandb_run_name: str = field(default="", metadata={"help": 'wandb run name'})
    wandb_watch: str = field(default="false", metadata={"help": "the reference's option (recorded, not used)"})
    wandb_log_model: str = field(default="false", metadata={"help": "the reference's option (recorded, not used)"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": 'a checkpoint-N folder of this command (exact continuation), "last"/True (the newest complete one in output_dir), or a weights-only file/folder.'})
    prompt_template_name: str = field(default="alpaca_short", metadata={"help": "prompt template (alpaca_short: the reference's)"})
    save_steps: int = field(default=100, metadata={"help": 'save a checkpoint every so many optimizer steps (0 = never)'})
    eval_steps: int = field(default=100, metadata={"help": 'eval loss every so many optimizer steps (0 = never)'})
    trainable_params: str = field(default="qformer_all", metadata={"help": "all | proj | qformer | qformer_all (the reference's modes; LoRA is always trained, Llama frozen), full (everything, the LLM too: tiny models only) or full_frozen_encoder (full but the audio encoder: the demo recipe's pre-trained one)."})
    # this project's additions
    preset: str | None = field(default=None, metadata={"help": 'a name in configs/train (gama_stage1 .. gama_stage5) or a JSON file of these options; its values replace the options left at their defaults.'})
    skip_bad_records: bool = field(default=False, metadata={"help": 'train on the valid records (reports go to output_dir) and drop examples whose audio fails to prepare, instead of stopping.'})
    check_audio: bool = field(default=True, metadata={"help": 'run the batch-time audio front end on every clip before training (so a bad clip stops the run before step 1, not in the middle).'})
    seed: int = field(default=42, metadata={"help": 'seed for shuffling, LoRA init and dropout'})
    device: str = field(default="auto", metadata={"help": 'auto | cpu (auto: the accelerator accelerate picks, cuda:LOCAL_RANK on GPUs).'})
    max_steps: int = field(default=-1, metadata={"help": 'optimizer steps; > 0 overrides num_epochs'})
    gradient_checkpointing: bool = field(default=False, metadata={"help": 'recompute activations in the backward pass (less memory)'})
    quantize: str = field(default="none", metadata={"help": "none | int8 | nf4: QLoRA, the frozen Llama held in 8 / 4 bits (bitsandbytes) while LoRA and the trained audio modules train in full precision; turns gradient checkpointing on. Checkpoints hold the trained tensors only and load over the quantized or the full base."})
    bf16: str | bool = field(default="auto", metadata={"help": 'auto (on CUDA with bf16 support) | True | False.'})
    max_grad_norm: float = field(default=1.0, metadata={"help": 'gradient clipping norm'})
    weight_decay: float = field(default=0.0, metadata={"help": 'AdamW weight decay'})
    padding_side: str = field(default="left", metadata={"help": "left (the reference's) or right"})
    logging_steps: int = field(default=10, metadata={"help": 'log every so many optimizer steps (0 = never)'})
    save_total_limit: int | None = field(default=None, metadata={"help": 'keep only the newest so many checkpoint-N folders.'})
    cache_fbank: bool = field(default=False, metadata={"help": "keep every clip's fbank in memory after its first use."})
    progress: bool = field(default=True, metadata={"help": 'show a progress bar'})


    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
