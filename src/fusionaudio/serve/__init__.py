"""Serving: ``fusionaudio serve`` (an OpenAI-compatible HTTP API) and ``fusionaudio demo`` (a Gradio page).

* :mod:`.api` - the FastAPI app (``create_app``); :mod:`.batcher` - dynamic batching;
* :mod:`.backend` - adapters over :func:`fusionaudio.inference.create_inference`'s objects;
* :mod:`.chat` / :mod:`.schemas` - the chat request, its checks and the OpenAI JSON answers;
* :mod:`.audio_input` - base64 audio bytes to waveforms (never a file path);
* :mod:`.web` - the Gradio demo, calling the same backend.

fastapi / uvicorn / gradio are imported only by the modules that need them.
"""
