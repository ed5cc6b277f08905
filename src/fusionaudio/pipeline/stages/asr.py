"""``asr``: a transformers Whisper model transcribes the speech stem (the mix without separation).

Batched: ``WhisperProcessor`` features (30 s windows for real Whisper; the clip's first window
is transcribed) and ``WhisperForConditionalGeneration.generate``. ``language``/``task`` are passed
to ``generate`` when set (real Whisper checkpoints); ``when_tags`` restricts ASR to clips that
tagging found speech in (off by default).
"""

from __future__ import annotations

from fusionaudio.pipeline import media
from fusionaudio.pipeline.stages.base import Item, Stage
from fusionaudio.pipeline.stages.common import audio_input, model_dir, tag_hit, torch_dtype


class AsrStage(Stage):
    name = "asr"
    reads = ("prepare", "separation", "tagging")
    requires = ("prepare",)
    PATH_KEYS = ("model",)
    DEFAULTS = {"model": "tiny", "audio": "speech", "language": None, "task": "transcribe", "max_new_tokens": 128,
                "num_beams": 1, "dtype": "float32", "when_tags": None, "min_tag_score": 0.1}

    def skip_reason(self, item: Item) -> str | None:
        if self.cfg["when_tags"] and tag_hit(item, self.cfg["when_tags"], self.cfg["min_tag_score"]) is None:
            return f"no speech tag ({self.cfg['when_tags']}) scoring >= {self.cfg['min_tag_score']}"
        return None

    def load(self) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        path = model_dir(self.cfg["model"], "whisper", self.context)
        self.processor = WhisperProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype(self.cfg["dtype"])).to(self.cfg["device"]).eval()

    def unload(self) -> None:
        self.model = self.processor = None

    def process(self, items: list[Item]) -> list:
        import torch

        sr = self.processor.feature_extractor.sampling_rate
        waves = [media.read_mono(audio_input(it, self.cfg["audio"]), sr) for it in items]
        feats = self.processor.feature_extractor(waves, sampling_rate=sr, return_tensors="pt",
                                                 return_attention_mask=True)
        gen = {"max_new_tokens": self.cfg["max_new_tokens"], "num_beams": self.cfg["num_beams"], "do_sample": False}
        if self.cfg["language"]:
            gen.update(language=self.cfg["language"], task=self.cfg["task"])
        with torch.no_grad():
            ids = self.model.generate(feats.input_features.to(self.cfg["device"], self.model.dtype),
                                      attention_mask=feats.attention_mask.to(self.cfg["device"]), **gen)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [{"text": t.strip()} for t in texts]
