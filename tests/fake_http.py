"""A local HTTP server for the download tests (127.0.0.1, ephemeral port): never the internet.

    with serve() as (base_url, state):
        state.routes["/files/a.bin"] = b"..."   # request path (with query) -> body

It speaks HTTP/1.0 (one request per connection), answers `Range: bytes=N-` with 206 (or 416 past
the end), and can misbehave on purpose: `state.truncate_once` stops the next GET of a path
halfway, `state.ignore_range` answers 200 to a Range request.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class ServerState:
    """What the fake server serves and what it saw."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}  # request path (with query) -> body
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.truncate_once: set[str] = set()  # paths whose next GET stops halfway
        self.ignore_range: set[str] = set()  # paths that answer 200 to a Range request

    def gets(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "GET"]


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one request per connection) with `Range: bytes=N-` support."""

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def _respond(self, send_body: bool) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.command, self.path, range_header))
        body = state.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and self.path not in state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not send_body:
            return
        if self.path in state.truncate_once:
            state.truncate_once.discard(self.path)
            payload = payload[: len(payload) // 2]  # then the connection closes
        self.wfile.write(payload)


@contextmanager
def serve() -> Iterator[tuple[str, ServerState]]:
    """A bounded local server; yields (base_url, state); shut down afterwards."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        yield base, httpd.state  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive holding `members` (name -> data)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return buffer.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    """Seeded bytes framed like a JPEG (never decoded by these tests)."""
    return b"\xff\xd8" + random.Random(seed).randbytes(2000) + b"\xff\xd9"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
