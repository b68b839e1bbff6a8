"""The app served the way `make run` serves it (``streamlit run webapp/serve.py``), for browser and raw-client tests
and for the benches: a free loopback port, a health wait that shows the server's log on failure, a clean stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, driven by Playwright (``playwright install`` cannot download here)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Headless Chromium in a container, quiet: no sandbox (root), no GPU, no background traffic."""
CLEARED = ("AFFECTLAB_", "SPACE_ID", "DATABASE_URL")
"""Environment variables a test server never inherits (access codes, allowlists, another database)."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Waits for ``/_stcore/health``; raises with the end of the server's log when it exits or never answers."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def serve_app(
    data: Path,
    weights_dir: Path,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    root: Path = ROOT,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Serves the guarded app on ``data`` with the weights of ``weights_dir``; yields its URL and process.

    Args:
        data: The data folder (``AFFECTLAB_DATA_DIR``).
        weights_dir: The weights folder (``AFFECTLAB_WEIGHTS_DIR``).
        log: Where the server's output goes.
        env: More environment variables (access codes, settings under test).
        args: More ``streamlit run`` options.
        root: The source tree to serve (another commit's tree, for a bench's baseline).
    """
    full = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    full.update(AFFECTLAB_DATA_DIR=str(data), AFFECTLAB_WEIGHTS_DIR=str(weights_dir), **(env or {}))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "webapp/serve.py",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        *args,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=full, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
