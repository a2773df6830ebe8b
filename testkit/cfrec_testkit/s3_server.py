"""A real S3-protocol server for tests: moto in server mode, over HTTP on a free loopback port.

Authentication is on (``INITIAL_NO_AUTH_ACTION_COUNT``): the first requests create an IAM user,
its access key and a bucket; every request after that must be signed with that key, so wrong
credentials fail as they would on AWS, Supabase Storage or R2. :class:`FaultyProxy` sits in
front of it and answers chosen requests with a 5xx, for uploads that fail half-way.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

BUCKET = "cfrec-models"
_SETUP_ACTIONS = 4  # create_user, create_access_key, put_user_policy, create_bucket


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    process: subprocess.Popen

    def settings(self, endpoint_url: str | None = None) -> dict[str, str]:
        """Keyword arguments for ``targets.open_target``."""
        return {
            "endpoint_url": endpoint_url or self.endpoint_url,
            "region": "us-east-1",
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def env(self, url: str) -> dict[str, str]:
        """The pipeline's / app's environment variables for ``url`` on this server."""
        return {
            "CFREC_SERVING_URL": url,
            "CFREC_S3_ENDPOINT_URL": self.endpoint_url,
            "CFREC_S3_REGION": "us-east-1",
            "CFREC_S3_ACCESS_KEY_ID": self.access_key_id,
            "CFREC_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server with authentication, one user with s3:* and one bucket."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, process)
        bootstrap = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        bootstrap |= {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **bootstrap)
        iam.create_user(UserName="cfrec")
        key = iam.create_access_key(UserName="cfrec")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="cfrec", PolicyName="s3", PolicyDocument=json.dumps(policy))
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], BUCKET, process)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on {port} within {timeout} s")


@dataclass
class FaultRules:
    """Requests matching ``method`` and ``path_pattern`` get ``status`` (every time: the client's
    retries see it too); ``seen`` records each forwarded "METHOD path"."""

    fail: list[tuple[str, str, int]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    down_after: str | None = None
    """Once a request whose path matches this pattern was forwarded, the "server" is down: every
    later request has its connection closed without an answer (the store's state stays readable)."""
    down: bool = False
    chunked: str | None = None
    """Answers to requests whose path matches this pattern are sent chunked, without a
    Content-Length (a body of unknown size: the client can only stop reading)."""


class FaultyProxy:
    """A loopback HTTP proxy in front of an S3 server (the Host header is passed through
    unchanged, so request signatures still verify)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules = FaultRules()
        rules, target = self.rules, upstream

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if rules.down:
                    self.close_connection = True
                    return
                rules.seen.append(f"{self.command} {self.path}")
                for method, pattern, status in rules.fail:
                    if method == self.command and re.search(pattern, self.path):
                        payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                        self.send_response(status)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
                with httpx.Client(timeout=30) as client:
                    reply = client.request(self.command, target + self.path, headers=headers, content=body)
                self.send_response(reply.status_code)
                for name, value in reply.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                if rules.chunked and re.search(rules.chunked, self.path) and self.command == "GET":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(reply.content), 1 << 16):
                        piece = reply.content[start : start + (1 << 16)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.content)
                if rules.down_after and re.search(rules.down_after, self.path):
                    rules.down = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
