"""A loopback HTTP endpoint that records the JSON posted to it (a stand-in Slack webhook)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookServer:
    """Records each POST body (parsed JSON) in ``posts``; answers ``status`` (200 by default).

    ``drip_seconds`` makes it hostile: it sends the status line and headers (announcing a long
    body), then one body byte every ``drip_seconds`` until the server is stopped, so every single
    read of a client succeeds and only a deadline on the whole answer ends it. ``dripping`` is set
    once the first byte went out.
    """

    def __init__(self, status: int = 200, drip_seconds: float | None = None) -> None:
        self.status = status
        self.posts: list[dict] = []
        self.dripping = threading.Event()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.posts.append(json.loads(body))
                self.send_response(server.status)
                if drip_seconds is None:
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        server.dripping.set()
                        if server._stop.wait(drip_seconds):
                            return
                except OSError:  # the client hung up: what a deadline does
                    return

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/alert"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
