"""``fusionaudio demo``: a Gradio page over the same backend, job building and batcher as the API.

Upload or record a clip, ask a question, set temperature / top_p / max tokens; the page shows the
answer, the clip's info and (AudSemThinker) its three sections side by side. Every request is
appended to a JSON-lines log (time, question, audio hash, settings, answer or error).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from fusionaudio.gama.generation import GENERATION_DEFAULTS

from fusionaudio.serve.batcher import Batcher
from fusionaudio.serve.chat import Limits, make_job, settings_for
from fusionaudio.serve.errors import ApiError

log = logging.getLogger("fusionaudio.serve.web")
EXAMPLE_CLIP = Path(__file__).resolve().parents[3] / "data" / "example" / "demo_clip.wav"
EXAMPLE_QUESTIONS = ["Describe the audio.", "What is the main sound?", "How many sounds are there?"]
NO_SECTIONS = "(this model answers without <think>/<semantic_elements>/<answer> sections)"


class DemoApp:
    """The demo's request handler (kept apart from the Gradio layout so it can be called directly)."""

    def __init__(self, backend, log_file: str | Path | None = "logs/demo_requests.jsonl",
                 limits: Limits | None = None, batcher: Batcher | None = None):
        self.backend, self.limits = backend, limits or Limits()
        self.batcher = (batcher or Batcher(backend)).start()
        self.log_file = Path(log_file) if log_file else None
        self._log_lock = threading.Lock()

    def _log(self, record: dict) -> None:
        if self.log_file is None:
            return
        with self._log_lock:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def answer(self, audio_path: str | None, question: str, temperature: float, top_p: float,
               max_tokens: float) -> dict:
        """{"answer", "info", "think", "semantic_elements", "structured_answer", "error"} for one request.

        ``audio_path`` is the file Gradio wrote for the upload/recording; its bytes go through the
        same decoding and checks as the API's base64 audio.
        """
        settings = settings_for(getattr(self.backend, "generation_defaults", None) or GENERATION_DEFAULTS,
                                int(max_tokens), temperature=float(temperature), top_p=float(top_p))
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "question": question, "audio_sha256": None,
                  "settings": {"temperature": temperature, "top_p": top_p, "max_tokens": int(max_tokens)}}
        out = {"answer": "", "info": "", "think": "", "semantic_elements": "", "structured_answer": "", "error": ""}
        try:
            if not (question or "").strip():
                raise ApiError(400, "please type a question")
            if int(max_tokens) > self.limits.max_tokens or int(max_tokens) < 1:
                raise ApiError(400, f"max tokens must be 1..{self.limits.max_tokens}")
            raw = Path(audio_path).read_bytes() if audio_path else None
            job = make_job(self.backend, question.strip(), raw, None, settings, self.limits, param="audio")
            record["audio_sha256"] = (job.audio_info or {}).get("sha256")
            result = self.batcher.submit(job).result()
        except ApiError as exc:
            out["error"] = f"Error: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - shown in the page, logged
            log.exception("demo request failed")
            out["error"] = f"Error: generation failed ({type(exc).__name__}: {exc})"
        else:
            out["answer"] = result.text
            info = job.audio_info
            out["info"] = "text only (no audio)" if info is None else (
                f"{info['duration_s']:.2f} s, {info['sample_rate']} Hz, {info['channels']} channel(s), "
                f"{'truncated to the model input' if info['truncated'] else 'not truncated'}")
            s = result.structured
            if s is None:
                out.update(think=NO_SECTIONS, semantic_elements=NO_SECTIONS, structured_answer=NO_SECTIONS)
            else:
                out.update(think=s.get("think") or "", semantic_elements=s.get("semantic_elements") or "",
                           structured_answer=s.get("answer") or "")
            record.update(answer=result.text, audio_info=info, finish_reason=result.finish_reason)
        if out["error"]:
            record["error"] = out["error"]
        self._log(record)
        return out


def build_demo(backend, log_file="logs/demo_requests.jsonl", limits: Limits | None = None):
    """The Gradio Blocks page (call ``.launch()``)."""
    import gradio as gr

    app = DemoApp(backend, log_file, limits)
    max_tokens = app.limits.max_tokens
    with gr.Blocks(title="FusionAudio demo") as demo:
        gr.Markdown(f"# FusionAudio demo\nModel: `{backend.arch}`. Upload or record a clip and ask about it.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
                question = gr.Textbox(label="Question", value=EXAMPLE_QUESTIONS[0], elem_id="question")
                temperature = gr.Slider(0.0, 2.0, value=GENERATION_DEFAULTS["temperature"], step=0.05,
                                        label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=GENERATION_DEFAULTS["top_p"], step=0.05, label="Top p")
                tokens = gr.Slider(1, max_tokens, value=min(256, max_tokens), step=1, label="Max new tokens")
                submit = gr.Button("Submit", variant="primary", elem_id="submit")
            with gr.Column():
                error = gr.Markdown(elem_id="error")
                answer = gr.Textbox(label="Answer", lines=4, elem_id="answer", interactive=False)
                info = gr.Textbox(label="Audio info", elem_id="info", interactive=False)
        with gr.Row(visible=backend.arch == "audsemthinker"):
            think = gr.Textbox(label="<think>", lines=6, elem_id="think", interactive=False)
            semantic = gr.Textbox(label="<semantic_elements>", lines=6, elem_id="semantic", interactive=False)
            final = gr.Textbox(label="<answer>", lines=6, elem_id="structured_answer", interactive=False)
        if EXAMPLE_CLIP.is_file():
            gr.Examples([[str(EXAMPLE_CLIP), q] for q in EXAMPLE_QUESTIONS], inputs=[audio, question],
                        label="Examples (the bundled clip)")

        def run(a, q, t, p, n):
            r = app.answer(a, q, t, p, n)
            return r["error"], r["answer"], r["info"], r["think"], r["semantic_elements"], r["structured_answer"]

        submit.click(run, [audio, question, temperature, top_p, tokens], [error, answer, info, think, semantic, final])
    return demo
