"""``fusionaudio serve`` (the HTTP API) and ``fusionaudio demo`` (the Gradio page)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fusionaudio.commands import HelpFormatter, run_command
from fusionaudio.errors import UsageError
from fusionaudio.loading.quantize import QUANTIZE_CHOICES, QUANTIZE_HELP
from fusionaudio.infer.cli import add_engine_options, check_engine_args


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base_model", help="model directory (either family); default: the bundled demo model")
    p.add_argument("--model_path", help="fine-tuned checkpoint / LoRA adapter on top of --base_model")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"],
                   help="model family; auto: from the base model's config")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (falls back to cpu without CUDA)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU)")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES, help=QUANTIZE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--max_audio_seconds", type=float, default=60.0, help="longest clip a request may send")
    p.add_argument("--max_tokens", type=int, default=1024, help="most new tokens a request may ask for")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); "
                   "1 is much faster on a machine whose cores are busy with other work")


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusionaudio serve", description="OpenAI-compatible audio chat API",
                                formatter_class=HelpFormatter)
    _model_args(p)
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--model_name", default=None, help="the model id clients send (default: fusionaudio-demo, or "
                   "the --base_model folder name)")
    p.add_argument("--api_key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max_batch_size", type=int, default=8, help="most requests answered in one batch")
    p.add_argument("--max_wait_ms", type=float, default=50.0,
                   help="longest wait for requests still being decoded to join a batch")
    p.add_argument("--min_wait_ms", type=float, default=20.0,
                   help="shortest wait after a batch's first request (0: a lone request starts at once)")
    p.add_argument("--max_body_mb", type=float, default=16.0, help="largest request body (MB)")
    p.add_argument("--request_timeout", type=float, default=30.0,
                   help="seconds a client has to send a whole request (line, headers, body) once it starts, and "
                        "the longest a connection may sit idle; slower ones get 408 and are closed")
    p.add_argument("--max_connections_per_client", type=int, default=64,
                   help="most connections one client address may hold open; more get 429 and are closed")
    add_engine_options(p)  # --engine vllm: vLLM's async engine (continuous batching; --max_batch_size = max_num_seqs)
    return p


def demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusionaudio demo", description="Gradio web demo", formatter_class=HelpFormatter)
    _model_args(p)
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--log_file", default="logs/demo_requests.jsonl", help="one JSON line per request")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs internet)")
    return p


def load_backend(args):
    """Load the model named by the common flags and wrap it (see :mod:`.backend`)."""
    from fusionaudio.inference import create_inference
    from fusionaudio.loading.device import resolve_device

    from fusionaudio.serve.backend import make_backend

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    device, note = resolve_device(args.device)
    if note:
        print(note, file=sys.stderr)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    engine_name = getattr(args, "engine", "hf")
    options = None if engine_name == "hf" else {"serving": True, "vllm_args": args.vllm_args,
                                                "lora": args.vllm_lora}
    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=dtype,
                              quantize=args.quantize, engine=engine_name, engine_options=options)
    return make_backend(engine)


def make_batcher(backend, args):
    """None (the API makes its dynamic :class:`~.batcher.Batcher`) or, for ``--engine vllm``, the started
    :class:`~.vllm_batcher.VllmBatcher`."""
    if getattr(args, "engine", "hf") == "hf":
        return None
    from fusionaudio.serve.vllm_batcher import VllmBatcher

    return VllmBatcher(backend, args.max_batch_size).start()


def default_model_name(args) -> str:
    return args.model_name or (Path(args.base_model).resolve().name if args.base_model else "fusionaudio-demo")


def serve_main(argv=None) -> int:
    args = serve_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run():
        from fusionaudio.serve.api import ServeConfig, create_app
        from fusionaudio.serve.chat import Limits
        from fusionaudio.serve.connections import ClientLimits, serve_app

        check_engine_args(args, several_processes=False)  # vLLM missing: one line saying how to install it
        try:
            client_limits = ClientLimits(args.request_timeout, args.max_connections_per_client)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        backend = load_backend(args)
        batcher = make_batcher(backend, args)
        config = ServeConfig(model_id=default_model_name(args), api_key=args.api_key,
                             max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_batch_size=args.max_batch_size,
                             max_wait_ms=args.max_wait_ms, min_wait_ms=args.min_wait_ms,
                             limits=Limits(max_audio_seconds=args.max_audio_seconds, max_tokens=args.max_tokens))
        print(f"serving {config.model_id!r} ({backend.arch}) on http://{args.host}:{args.port}/v1", file=sys.stderr)
        serve_app(create_app(backend, config, batcher), args.host, args.port, client_limits)

    return run_command(run)


def demo_main(argv=None) -> int:
    args = demo_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run():
        from fusionaudio.serve.chat import Limits
        from fusionaudio.serve.web import EXAMPLE_CLIP, build_demo

        backend = load_backend(args)
        demo = build_demo(backend, log_file=args.log_file,
                          limits=Limits(max_audio_seconds=args.max_audio_seconds, max_tokens=args.max_tokens))
        print(f"demo on http://{args.host}:{args.port}", file=sys.stderr)
        demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                    allowed_paths=[str(EXAMPLE_CLIP.parent)])

    return run_command(run)
