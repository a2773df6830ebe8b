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
    # path -> Location of a 302 redirect
    redirects: dict[str, str] = field(default_factory=dict)


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
        if name in self.state.redirects:
            self.send_response(302)
            self.send_header("Location", self.state.redirects[name])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if name in self.state.gzip:
            body = gzip.compress(Path(self.directory, name).read_bytes())
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if name in self.state.truncate_to:
            body = Path(self.directory, name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: self.state.truncate_to[name]])
            self.close_connection = True
            return
        super().do_GET()


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

    def __enter__(self) -> "FolderServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
