"""``tagging``: sound-event tags from a transformers audio-classification model (AST by default,
AudioSet labels from the checkpoint's ``id2label``). AudioSet is multi-label, so the scores are
sigmoids; the ``top_k`` labels scoring at least ``min_score`` are kept with their scores.
"""

from __future__ import annotations

from fusionaudio.pipeline import media
from fusionaudio.pipeline.stages.base import Item, Stage
from fusionaudio.pipeline.stages.common import audio_input, model_dir, torch_dtype


class TaggingStage(Stage):
    name = "tagging"
    reads = ("prepare", "separation")
    requires = ("prepare",)
    PATH_KEYS = ("model",)
    DEFAULTS = {"model": "tiny", "audio": "mix", "top_k": 5, "min_score": 0.1, "activation": "sigmoid",
                "dtype": "float32"}

    def load(self) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        if self.cfg["activation"] not in ("sigmoid", "softmax"):
            raise ValueError(f"stages.tagging.activation must be sigmoid or softmax, not {self.cfg['activation']!r}")
        path = model_dir(self.cfg["model"], "ast", self.context)
        self.extractor = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.model = AutoModelForAudioClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False,
            dtype=torch_dtype(self.cfg["dtype"])).to(self.cfg["device"]).eval()

    def unload(self) -> None:
        self.model = self.extractor = None

    def process(self, items: list[Item]) -> list:
        import torch

        sr = self.extractor.sampling_rate
        waves = [media.read_mono(audio_input(it, self.cfg["audio"]), sr) for it in items]
        feats = self.extractor(waves, sampling_rate=sr, return_tensors="pt")
        feats = {k: v.to(self.cfg["device"], self.model.dtype if v.is_floating_point() else v.dtype)
                 for k, v in feats.items()}
        with torch.no_grad():
            logits = self.model(**feats).logits.float()
        probs = torch.sigmoid(logits) if self.cfg["activation"] == "sigmoid" else logits.softmax(-1)
        k = min(self.cfg["top_k"], probs.shape[-1])
        scores, idx = probs.topk(k, dim=-1)
        labels = self.model.config.id2label
        return [{"labels": [{"label": labels[int(i)], "score": round(float(s), 4)}
                            for s, i in zip(srow, irow) if float(s) >= self.cfg["min_score"]]}
                for srow, irow in zip(scores, idx)]
