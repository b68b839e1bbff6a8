"""Server memory held by uploads: this tree (spooled to disk by the guard) against a baseline commit (issue 23).

Two guarded servers (``streamlit run webapp/serve.py``) side by side in one run, each given the same uploads by a
signed-in owner (raw multipart PUTs, as Streamlit's uploader sends them): ``--files`` files of ``--mb`` MB. For
each the bench prints the server's RSS growth after the uploads (what the server keeps holding) and its peak during
them (sampled every 20 ms), and the ratio baseline / this tree.

Usage: python bench/bench_upload_memory.py [--mb 200] [--files 1] [--baseline main]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import serve_app  # noqa: E402
from tests.stclient import StClient, submit_code  # noqa: E402

OWNER_CODE = "bench-owner-code"


def _export(rev: str, into: Path) -> Path:
    """Commit ``rev``'s tree in ``into`` (``git archive``), to serve the app as it was."""
    blob = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def _put(base: str, path: str, cookie: str, size: int) -> int:
    """A multipart upload of ``size`` zero bytes, streamed in 1 MB chunks; the status."""
    host, port = base.removeprefix("http://").split(":")
    b = "bench-boundary"
    head = (
        f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="class.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    ).encode()
    tail = f"\r\n--{b}--\r\n".encode()
    request = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
        f"Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len(head) + size + len(tail)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(request + head)
        chunk = os.urandom(1 << 20)
        sent = 0
        while sent < size:
            n = min(len(chunk), size - sent)
            s.sendall(chunk[:n])
            sent += n
        s.sendall(tail)
        reply = s.recv(4096)
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1") else 0


def _measure(root: Path, data: Path, mb: int, files: int) -> tuple[float, float, list[int]]:
    import psutil

    env = {
        "AFFECTLAB_ACCESS_CODE": "bench-code",
        "AFFECTLAB_OWNER_CODE": OWNER_CODE,
        "AFFECTLAB_MAX_UPLOAD_MB": str(mb + 1),
    }
    args = ["--server.maxUploadSize", str(mb + 1), "--server.enableXsrfProtection", "false"]
    with serve_app(data, data / "no-weights", data / "server.log", env=env, args=args, root=root) as (base, proc):
        with urllib.request.urlopen(base + "/", timeout=30) as r:
            cookie = r.headers.get("Set-Cookie", "").split(";", 1)[0]
        owner = StClient(base, cookie=cookie)
        submit_code(owner, owner.run(), OWNER_CODE, "Study access code")
        owner.run()
        server = psutil.Process(proc.pid)
        time.sleep(1)
        before = server.memory_info().rss
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], server.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        statuses = [
            _put(base, f"/_stcore/upload_file/{owner.session_id}/bench-{i}", cookie, mb << 20) for i in range(files)
        ]
        time.sleep(2)
        done.set()
        sampler.join()
        after = server.memory_info().rss
        owner.close()
    return (after - before) / 2**20, (peak[0] - before) / 2**20, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--baseline", default="main", help="the commit to compare with")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        base_root = _export(args.baseline, Path(tmp) / "baseline")
        rows = []
        for label, root in ((f"baseline {args.baseline}", base_root), ("this tree", ROOT)):
            data = Path(tmp) / label.replace(" ", "-") / "data"
            data.mkdir(parents=True)
            rows.append((label, *_measure(root, data, args.mb, args.files)))
    print(f"{args.files} upload(s) of {args.mb} MB by a signed-in owner; server RSS growth in MB")
    print(f"{'server':<22} {'held after':>11} {'peak during':>12}  statuses")
    for label, held, peak, statuses in rows:
        print(f"{label:<22} {held:>11.0f} {peak:>12.0f}  {statuses}")
    (_, held_a, peak_a, _), (_, held_b, peak_b, _) = rows
    print(f"ratio baseline / this tree: held {held_a / max(held_b, 1):.0f}x, peak {peak_a / max(peak_b, 1):.0f}x")


if __name__ == "__main__":
    main()
