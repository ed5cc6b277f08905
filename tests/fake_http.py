"""A local JSON-over-HTTP endpoint for the tests of OpenAI-compatible clients (judge, embeddings, pipeline LLM).

``JsonServer(respond)`` listens on 127.0.0.1 (a free port) and answers every POST with
``respond(path, headers, body)``, which returns ``(status, obj)`` or ``(status, obj, extra_headers)``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_reply(text: str) -> dict:
    """An OpenAI chat-completions response carrying ``text``."""
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


class JsonServer:
    def __init__(self, respond):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, obj, *extra = respond(self.path, self.headers, body)
                blob = json.dumps(obj).encode()
                self.send_response(status)
                for k, v in (extra[0] if extra else {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
