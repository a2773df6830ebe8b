"""A real HTTP server on a free loopback port serving a folder, with hooks to misbehave."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ServerState:
    requests: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # Authorization header of each request
    # path -> bytes actually sent while Content-Length announces the full size
    truncate_to: dict[str, int] = field(default_factory=dict)
    # paths sent gzipped with Content-Encoding: gzip (Content-Length: the gzipped size)
    gzip: set[str] = field(default_factory=set)
    # path -> a ready gzip body sent as is with Content-Encoding: gzip (a transport-level bomb, say)
    gzip_bodies: dict[str, bytes] = field(default_factory=dict)
    # path -> Location of a 302 redirect
    redirects: dict[str, str] = field(default_factory=dict)
    # path -> how many requests for it must have arrived before any is answered in full. Until
    # then each is answered as a slow mirror would (headers at once, then one byte of the body
    # every DRIP_SECONDS), so no client read timeout fires however long the others take to ask.
    meet: dict[str, int] = field(default_factory=dict)
    arrived: threading.Condition = field(default_factory=threading.Condition)


DRIP_SECONDS = 5.0


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, state: ServerState, **kwargs):
        self.state = state
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.state.requests.append(self.path)
        self.state.authorizations.append(self.headers.get("Authorization"))
        name = self.path.lstrip("/")
        if name in self.state.meet:
            self._send_once_met(name)
        elif name in self.state.redirects:
            self._send(b"", {"Location": self.state.redirects[name]}, status=302)
        elif name in self.state.gzip_bodies:
            self._send(self.state.gzip_bodies[name], {"Content-Encoding": "gzip"})
        elif name in self.state.gzip:
            self._send(gzip.compress(Path(self.directory, name).read_bytes()), {"Content-Encoding": "gzip"})
        elif name in self.state.truncate_to:
            self._send(Path(self.directory, name).read_bytes(), {})
        else:
            super().do_GET()

    def _send_once_met(self, name: str) -> None:
        body, arrived = Path(self.directory, name).read_bytes(), self.state.arrived
        with arrived:
            arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = 0

        def met() -> bool:
            return self.state.requests.count(self.path) >= self.state.meet[name]

        while sent < len(body) - 1:
            with arrived:
                if arrived.wait_for(met, timeout=DRIP_SECONDS):
                    break
            self.wfile.write(body[sent : sent + 1])
            self.wfile.flush()
            sent += 1
        self.wfile.write(body[sent:])

    def _send(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        """Send ``body`` (cut to ``truncate_to`` if set for the path, with the full length announced)."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        cut = self.state.truncate_to.get(self.path.lstrip("/"))
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True


class FolderServer:
    """``with FolderServer(folder) as server: server.url`` -> ``http://127.0.0.1:PORT/``."""

    def __init__(self, folder: Path):
        self.state = ServerState()
        handler = partial(_Handler, directory=str(folder), state=self.state)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> FolderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
