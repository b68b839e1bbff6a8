"""A local HTTP file server for download tests (Range, truncation, error statuses), and what a weights folder trusts."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from models.download import DOWNLOADS


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.truncated: set[str] = set()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``state.files``; per-path modes: full (default, honours Range), ignore_range, truncate,
    truncate_once, or an HTTP status code as a string."""

    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        mode = state.modes.get(self.path, "full")
        if self.path not in state.files:
            self.send_error(404)
            return
        if mode.isdigit():
            self.send_error(int(mode))
            return
        data = state.files[self.path]
        start = 0
        status = 200
        if rng and mode != "ignore_range":
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = mode == "truncate" or (mode == "truncate_once" and self.path not in state.truncated)
        if cut:
            state.truncated.add(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class Server:
    def __init__(self, state: _State, port: int) -> None:
        self.state = state
        self.port = port

    def serve(self, path: str, data: bytes, mode: str = "full") -> str:
        self.state.files[path] = data
        self.state.modes[path] = mode
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.state.requests if p == path]


@contextlib.contextmanager
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A :class:`Server` on a free local port for the duration of the block (proxies bypassed)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = _State()
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(state, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def blob_sha1(data: bytes) -> str:
    """The git blob SHA-1 of ``data``, computed independently of ``models.download``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def trusted_files(wd: Path) -> list[Path]:
    """Files at paths that some later run would trust: anything outside downloads/, and completed downloads."""
    if not wd.exists():
        return []
    out = []
    for p in wd.rglob("*"):
        if not p.is_file():
            continue
        if p.parent.name == DOWNLOADS and (p.name.endswith(".lock")):
            continue
        out.append(p)
    return out
