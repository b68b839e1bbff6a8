"""The resumable verified downloader (against a local HTTP server) and git blob hashing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import download
from models.errors import DownloadError, HashMismatchError
from tests.fileserver import Server, serving
from tests.fileserver import blob_sha1 as _blob_sha1
from tests.fileserver import trusted_files as _trusted_files


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(monkeypatch) as s:
        yield s


@pytest.fixture(scope="module")
def payload() -> bytes:
    return np.random.default_rng(0).integers(0, 256, size=2_500_000, dtype=np.uint8).tobytes()


def test_git_blob_sha1_known_values(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert download.git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello\n")
    assert download.git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_git_blob_sha1_matches_git(tmp_path: Path, payload: bytes) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    f = tmp_path / "blob.bin"
    f.write_bytes(payload)
    expected = subprocess.run([git, "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert download.git_blob_sha1(f) == expected == _blob_sha1(payload)


def test_download_success(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/f.bin", payload)
    dest = tmp_path / "w" / "f.bin"
    out = download.download(url, dest, _blob_sha1(payload), "f", progress=False)
    assert out == dest and dest.read_bytes() == payload
    assert server.requests_for("/f.bin") == [None]
    assert not list((tmp_path / "w" / "downloads").glob("*.part"))
    # Already there with the right hash: nothing is downloaded again.
    download.download(url, dest, _blob_sha1(payload), "f", progress=False)
    assert len(server.requests_for("/f.bin")) == 1


def test_download_progress_hook(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/h.bin", payload)
    seen: list[tuple[int, int | None]] = []
    download.download(
        url,
        tmp_path / "h.bin",
        _blob_sha1(payload),
        "h",
        progress=False,
        on_progress=lambda got, total: seen.append((got, total)),
    )
    got = [g for g, _ in seen]
    assert got == sorted(got) and got[-1] == len(payload)
    assert {t for _, t in seen} == {len(payload)}


def test_download_progress_bar_goes_to_stderr(
    tmp_path: Path, server: Server, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/p.bin", payload)
    download.download(url, tmp_path / "p.bin", _blob_sha1(payload), "p", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "p:" in captured.err


def test_download_hash_mismatch_keeps_nothing(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/bad.bin", payload)
    wrong = "0" * 40
    dest = tmp_path / "w" / "bad.bin"
    with pytest.raises(HashMismatchError) as err:
        download.download(url, dest, wrong, "bad", progress=False)
    msg = str(err.value)
    assert wrong in msg and _blob_sha1(payload) in msg and url in msg
    assert err.value.expected == wrong and err.value.actual == _blob_sha1(payload)
    assert not dest.exists()
    assert _trusted_files(tmp_path / "w") == []
    assert not list((tmp_path / "w" / "downloads").glob("*.part"))


def test_download_truncated_then_resumed(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/t.bin", payload, mode="truncate")
    dest = tmp_path / "w" / "t.bin"
    part = tmp_path / "w" / "downloads" / "t.bin.part"
    with pytest.raises(DownloadError) as err:
        download.download(url, dest, _blob_sha1(payload), "t", progress=False, retries=0)
    assert url in str(err.value) and "resume" in str(err.value)
    assert not dest.exists()
    kept = part.stat().st_size
    assert 0 < kept <= len(payload) // 2  # what arrived (up to the last whole network chunk), never trusted
    assert part.read_bytes() == payload[:kept]
    # The next run resumes from where the last one stopped.
    server.state.modes["/t.bin"] = "full"
    download.download(url, dest, _blob_sha1(payload), "t", progress=False, retries=0)
    assert dest.read_bytes() == payload
    assert server.requests_for("/t.bin") == [None, f"bytes={kept}-"]
    assert not part.exists()


def test_download_retry_resumes_within_one_call(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/r.bin", payload, mode="truncate_once")
    dest = tmp_path / "r.bin"
    download.download(url, dest, _blob_sha1(payload), "r", progress=False, retries=1, backoff=0)
    assert dest.read_bytes() == payload
    first, second = server.requests_for("/r.bin")
    assert first is None and second is not None and second.startswith("bytes=") and second != "bytes=0-"


def test_download_restarts_when_server_ignores_range(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/i.bin", payload, mode="ignore_range")
    part = tmp_path / "downloads" / "i.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 1000)  # leftover bytes that must not end up in front of the file
    download.download(url, tmp_path / "i.bin", _blob_sha1(payload), "i", progress=False, retries=0)
    assert (tmp_path / "i.bin").read_bytes() == payload
    assert server.requests_for("/i.bin") == ["bytes=1000-"]


def test_download_restarts_on_416(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/x.bin", payload)
    part = tmp_path / "downloads" / "x.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(payload) + 10))  # longer than the file: the server answers 416
    download.download(url, tmp_path / "x.bin", _blob_sha1(payload), "x", progress=False, retries=0)
    assert (tmp_path / "x.bin").read_bytes() == payload
    assert server.requests_for("/x.bin") == [f"bytes={len(payload) + 10}-", None]


def test_download_complete_part_is_verified_not_refetched(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/c.bin", payload)
    part = tmp_path / "downloads" / "c.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    download.download(url, tmp_path / "c.bin", _blob_sha1(payload), "c", progress=False, retries=0)
    assert (tmp_path / "c.bin").read_bytes() == payload
    assert server.requests_for("/c.bin") == [f"bytes={len(payload)}-"]


def test_download_bad_leftover_restarts_once(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/s.bin", payload)
    part = tmp_path / "downloads" / "s.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not the same file" * 10)  # a leftover of another file version: resume gives a bad hash
    download.download(url, tmp_path / "s.bin", _blob_sha1(payload), "s", progress=False, retries=0)
    assert (tmp_path / "s.bin").read_bytes() == payload
    assert server.requests_for("/s.bin") == ["bytes=170-", None]


def test_download_retries_transient_status(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/503.bin", payload, mode="503")
    with pytest.raises(DownloadError, match="HTTP 503"):
        download.download(url, tmp_path / "a.bin", _blob_sha1(payload), "a", progress=False, retries=2, backoff=0)
    assert len(server.requests_for("/503.bin")) == 3
    server.state.modes["/404.bin"] = "404"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download(server.url("/404.bin"), tmp_path / "b.bin", "0" * 40, "b", progress=False, backoff=0)
    assert len(server.requests_for("/404.bin")) == 1  # a permanent error is not retried


@pytest.mark.parametrize("status", ["404", "500"])
def test_download_http_error(tmp_path: Path, server: Server, payload: bytes, status: str) -> None:
    url = server.serve(f"/e{status}.bin", payload, mode=status)
    dest = tmp_path / "w" / "e.bin"
    with pytest.raises(DownloadError) as err:
        download.download(url, dest, _blob_sha1(payload), "e", progress=False, retries=0)
    assert url in str(err.value) and f"HTTP {status}" in str(err.value)
    assert _trusted_files(tmp_path / "w") == []


def test_download_refuses_concurrent_writer(tmp_path: Path, server: Server, payload: bytes) -> None:
    url = server.serve("/l.bin", payload)
    with download._exclusive(tmp_path / "downloads" / ".l.bin.lock"), pytest.raises(DownloadError, match="another"):
        download.download(url, tmp_path / "l.bin", _blob_sha1(payload), "l", progress=False)
    assert server.requests_for("/l.bin") == []


def test_download_connection_refused(tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        download.download("http://127.0.0.1:9/none", tmp_path / "n.bin", "0" * 40, "n", progress=False, retries=0)
    assert not (tmp_path / "n.bin").exists()
