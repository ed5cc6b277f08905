"""AudSemThinker interface data: system prompt, chat template, special tokens, defaults.

Sources (facts, read from the public AudSemThinker repository GLJS/AudSemThinker, files
``training/main_omni.py`` and ``training/AudioBench/src/model_src/audsemthinker.py``):

* the system message is Qwen2.5-Omni's default system prompt, used verbatim in both training and
  evaluation (:data:`SYSTEM_PROMPT`);
* the user turn is ``[audio, text]`` where the text is one of the instructions in
  :mod:`fusionaudio.structured` (captioning instruction for the general model, question-answering
  prefix for QA training);
* the training target is ``"<think>{thinking}</think>\\n<semantic_elements>{elements}</semantic_elements>\\n<answer>{answer}</answer>"``
  (:func:`format_target`);
* SFT: LoRA r=8, alpha=16, dropout 0.05, no bias, target modules ``q_proj`` and ``v_proj`` (every module
  so named in the thinker: text decoder and audio encoder), lr 2e-4, 1 epoch, batch 4, bf16, loss on the
  tokens after ``<|im_start|>assistant\\n`` only;
* evaluation: greedy decoding, 512 new tokens.
"""

from __future__ import annotations

from fusionaudio.structured import CAPTION_INSTRUCTION, PROMPT_MODES, QA_INSTRUCTION, build_instruction

__all__ = [
    "SYSTEM_PROMPT",
    "CAPTION_INSTRUCTION",
    "QA_INSTRUCTION",
    "PROMPT_MODES",
    "DEFAULT_PROMPT_MODE",
    "GENERATION_DEFAULTS",
    "LORA_DEFAULTS",
    "TRAIN_DEFAULTS",
    "GRPO_DEFAULTS",
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "build_instruction",
    "format_target",
]

SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)

DEFAULT_PROMPT_MODE = "caption"

# Greedy decoding with 512 new tokens, as the public evaluation code runs the model.
GENERATION_DEFAULTS = dict(do_sample=False, temperature=1.0, top_p=1.0, top_k=50, max_new_tokens=512)

LORA_DEFAULTS = dict(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", target_modules=("q_proj", "v_proj"))

TRAIN_DEFAULTS = dict(lr=2e-4, epochs=1, batch_size=4)

# GRPO (training/grpo_main_omni.py): per-device batch and num_generations count completions, as in TRL.
GRPO_DEFAULTS = dict(lr=1e-6, epochs=1, batch_size=2, grad_accum=1, beta=0.01, scale_rewards=True, loss_type="grpo",
                     max_prompt_length=512, max_completion_length=512, num_generations=4, warmup_steps=0)

# Qwen2.5-Omni's multimodal special tokens, by the tokenizer attribute name the processor expects.
SPECIAL_TOKENS = {
    "pad_token": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
}

# A ChatML template with Qwen2.5-Omni's placeholders for audio / image / video content items. Real
# checkpoints ship their own template (chat_template.json); this one is written into the tiny test
# checkpoints and renders the same text for system + [audio, text] user turns.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif item['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif item['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def format_target(thinking: str, semantic_elements: str, answer: str) -> str:
    """The assistant completion AudSemThinker is trained on, from its three parts."""
    return (
        f"<think>{thinking.strip()}</think>\n"
        f"<semantic_elements>{semantic_elements.strip()}</semantic_elements>\n"
        f"<answer>{answer.strip()}</answer>"
    )
