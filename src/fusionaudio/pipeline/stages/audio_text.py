"""Audio -> text models behind ``audio_caption`` and ``music_caption``.

* ``fusionaudio``: our GAMA/FusionAudio model through the public
  :func:`fusionaudio.inference.create_inference` (``base_model: null`` = the bundled demo model);
* ``qwen2_audio``: ``Qwen2AudioForConditionalGeneration`` + its processor from a local directory
  (the chat template of the checkpoint, one audio per turn).
"""

from __future__ import annotations

from fusionaudio.pipeline import media
from fusionaudio.pipeline.stages.base import Item, Stage, StageError
from fusionaudio.pipeline.stages.common import audio_input, model_dir, tag_hit, torch_dtype

BACKENDS = ("fusionaudio", "qwen2_audio")


class FusionAudioBackend:
    def __init__(self, cfg: dict, context: dict):
        from fusionaudio.inference import create_inference

        base = None if cfg["model"] in (None, "", "bundled") else str(model_dir(cfg["model"], "fusionaudio", context))
        self.infer = create_inference(cfg["arch"], base_model_path=base, model_path=cfg["model_path"],
                                      device=cfg["device"], dtype=cfg["dtype"])
        self.name = f"fusionaudio:{getattr(self.infer, 'model_label', None) or base}"

    def generate(self, paths: list[str], prompt: str, cfg: dict) -> list[str]:
        return self.infer.predict_batch(paths, prompt, batch_size=len(paths), do_sample=False,
                                        max_new_tokens=cfg["max_new_tokens"])


class Qwen2AudioBackend:
    def __init__(self, cfg: dict, context: dict):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        path = model_dir(cfg["model"], "qwen2_audio", context)
        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.processor.tokenizer.padding_side = "left"
        self.model = Qwen2AudioForConditionalGeneration.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype(cfg["dtype"])).to(cfg["device"]).eval()
        self.name, self.device = f"qwen2_audio:{path}", cfg["device"]

    def generate(self, paths: list[str], prompt: str, cfg: dict) -> list[str]:
        import torch

        sr = self.processor.feature_extractor.sampling_rate
        waves = [media.read_mono(p, sr) for p in paths]
        conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        enc = self.processor(text=[text] * len(waves), audio=waves, sampling_rate=sr, return_tensors="pt", padding=True)
        enc = {k: (v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device))
               for k, v in enc.items()}
        with torch.no_grad():
            ids = self.model.generate(**enc, max_new_tokens=cfg["max_new_tokens"], do_sample=False)
        new = ids[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


class AudioTextStage(Stage):
    """Shared by the two caption stages; subclasses set the name, prompt and audio input."""

    reads = ("prepare", "separation", "tagging")
    requires = ("prepare",)
    PATH_KEYS = ("model", "model_path")

    def load(self) -> None:
        if self.cfg["backend"] not in BACKENDS:
            raise ValueError(f"stages.{self.name}.backend must be one of {BACKENDS}, not {self.cfg['backend']!r}")
        cls = FusionAudioBackend if self.cfg["backend"] == "fusionaudio" else Qwen2AudioBackend
        self.backend = cls(self.cfg, self.context)

    def model_name(self) -> str:
        return f"{self.cfg['backend']}:{self.cfg['model'] or 'bundled demo model'}"

    def unload(self) -> None:
        self.backend = None

    def process(self, items: list[Item]) -> list:
        paths = [audio_input(it, self.cfg["audio"]) for it in items]
        texts = self.backend.generate(paths, self.cfg["prompt"], self.cfg)
        outs = []
        for t in texts:
            outs.append({"caption": t} if t else StageError(f"{self.name}: the model returned an empty caption"))
        return outs


BACKEND_DEFAULTS = {"backend": "fusionaudio", "model": None, "model_path": None, "arch": "auto",
                    "dtype": "float32", "max_new_tokens": 96}


class AudioCaptionStage(AudioTextStage):
    name = "audio_caption"
    DEFAULTS = {**BACKEND_DEFAULTS, "audio": "mix", "prompt": "Describe the audio in detail."}


class MusicCaptionStage(AudioTextStage):
    """Runs only where tagging found music (``music_tags`` scoring >= ``min_tag_score``)."""

    name = "music_caption"
    DEFAULTS = {**BACKEND_DEFAULTS, "audio": "background",
                "prompt": "Describe the music: genre, instruments, mood and tempo.",
                "music_tags": ["Music", "Musical instrument", "Singing", "Song"], "min_tag_score": 0.3}

    def skip_reason(self, item: Item) -> str | None:
        if item.ok("tagging") is None:
            return "no tagging result (music captioning follows music detection)"
        if tag_hit(item, self.cfg["music_tags"], self.cfg["min_tag_score"]) is None:
            return f"no music detected (no tag in {self.cfg['music_tags']} scoring >= {self.cfg['min_tag_score']})"
        return None
