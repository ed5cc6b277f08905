"""``clap_filter``: CLAP audio-text similarity between the clip and its fused caption.

Cosine similarity of L2-normalised ``ClapModel`` embeddings (``fusionaudio.retrieval.clap.ClapDualEncoder``,
a local directory); the score is kept in every record, and a clip scoring below ``threshold`` is
``filtered`` (the paper's statistics show CLAP scores of about 0.05-0.55; the paper's threshold is
not public, 0.1 is our default).
"""

from __future__ import annotations

import numpy as np

from fusionaudio.pipeline.stages.base import Filtered, Item, Stage
from fusionaudio.pipeline.stages.common import model_dir


class ClapFilterStage(Stage):
    name = "clap_filter"
    reads = ("prepare", "fusion")
    requires = ("prepare", "fusion")
    PATH_KEYS = ("model",)
    DEFAULTS = {"model": "tiny", "threshold": 0.1}

    def load(self) -> None:
        from fusionaudio.retrieval.clap import ClapDualEncoder

        path = model_dir(self.cfg["model"], "clap", self.context)
        self.encoder = ClapDualEncoder(str(path), device=self.cfg["device"], batch_size=self.cfg["batch_size"])

    def unload(self) -> None:
        self.encoder = None

    def process(self, items: list[Item]) -> list:
        audio = self.encoder.encode_audio([it.ok("prepare")["audio"] for it in items])
        text = self.encoder.encode_text([it.ok("fusion")["caption"] for it in items])
        scores = np.sum(audio * text, axis=1)
        thr = float(self.cfg["threshold"])
        outs = []
        for s in scores:
            out = {"score": round(float(s), 5), "threshold": thr, "kept": bool(s >= thr)}
            outs.append(out if out["kept"] else Filtered(out, f"CLAP score {float(s):.4f} < threshold {thr}"))
        return outs
