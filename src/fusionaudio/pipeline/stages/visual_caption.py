"""``visual_caption``: a transformers image-text-to-text model (``AutoModelForImageTextToText`` +
``AutoProcessor``, e.g. LLaVA, Qwen2-VL) captions each sampled frame; audio-only clips are skipped.

The prompt is sent through the processor's chat template when it has one, else ``prompt_format``
(``{prompt}`` with the image token placed by the processor's ``image_token``).
"""

from __future__ import annotations

from fusionaudio.pipeline.stages.base import Item, Stage, StageError
from fusionaudio.pipeline.stages.common import model_dir, torch_dtype


class VisualCaptionStage(Stage):
    name = "visual_caption"
    reads = ("prepare",)
    requires = ("prepare",)
    PATH_KEYS = ("model",)
    DEFAULTS = {"model": "tiny", "prompt": "Describe what is happening in this video frame in one sentence.",
                "prompt_format": "USER: {image}\n{prompt} ASSISTANT:", "max_new_tokens": 48, "dtype": "float32"}

    def skip_reason(self, item: Item) -> str | None:
        return None if item.ok("prepare")["frames"] else "audio-only clip (no video frames)"

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = model_dir(self.cfg["model"], "vlm", self.context)
        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False,
            dtype=torch_dtype(self.cfg["dtype"])).to(self.cfg["device"]).eval()

    def unload(self) -> None:
        self.model = self.processor = None

    def _text(self) -> str:
        proc = self.processor
        if getattr(proc, "chat_template", None):
            conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.cfg["prompt"]}]}]
            return proc.apply_chat_template(conv, add_generation_prompt=True)
        return self.cfg["prompt_format"].format(image=getattr(proc, "image_token", "<image>"), prompt=self.cfg["prompt"])

    def process(self, items: list[Item]) -> list:
        import torch
        from PIL import Image

        frames = [(i, f) for i, it in enumerate(items) for f in it.ok("prepare")["frames"]]
        images = [Image.open(f).convert("RGB") for _, f in frames]
        text = self._text()
        enc = self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        enc = {k: (v.to(self.cfg["device"], self.model.dtype) if v.is_floating_point() else v.to(self.cfg["device"]))
               for k, v in enc.items()}
        with torch.no_grad():
            ids = self.model.generate(**enc, max_new_tokens=self.cfg["max_new_tokens"], do_sample=False)
        texts = self.processor.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        per_clip: list[list[str]] = [[] for _ in items]
        for (i, _), t in zip(frames, texts):
            per_clip[i].append(t.strip())
        outs = []
        for caps in per_clip:
            kept = [c for c in caps if c]
            outs.append({"frame_captions": caps, "caption": " ".join(dict.fromkeys(kept))} if kept
                        else StageError("visual_caption: the model returned empty captions for every frame"))
        return outs
