"""Weights: git blob hashing, the resumable verified downloader (against a local HTTP server), fetch/import, the
pickle -> safetensors conversion, and loading without unpickling."""

from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import convert, download, registry, weights
from models.backbones import build_model, split_head
from models.errors import (
    BadInputError,
    CheckpointFormatError,
    DownloadError,
    HashMismatchError,
    WeightsMissingError,
)
from models.registry import REGISTRY, get_spec
from tests.checkpoints import (
    export_published_onnx,
    install_random_weights,
    random_published_module,
    save_published,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")  # emotiefflib's class

B0 = "enet_b0_8_best_vgaf"
MBF = "mbf_va_mtl"


# --------------------------------------------------------------------------------------------------- local server


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


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
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


def _blob_sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def payload() -> bytes:
    return np.random.default_rng(0).integers(0, 256, size=2_500_000, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def b0_published(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = random_published_module(get_spec(B0), seed=3)
    return module, save_published(module, tmp_path_factory.mktemp("published") / "enet_b0_8_best_vgaf.pt")


@pytest.fixture(scope="module")
def mbf_published(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = random_published_module(get_spec(MBF), seed=4)
    return module, save_published(module, tmp_path_factory.mktemp("published") / "mbf_va_mtl.pt")


def _pin_hash(monkeypatch: pytest.MonkeyPatch, name: str, sha1: str) -> None:
    """Makes the registry expect ``sha1`` for ``name`` (the URL stays the pinned one)."""
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], git_blob_sha1=sha1))


def _trusted_files(wd: Path) -> list[Path]:
    """Files at paths that some later run would trust: anything outside downloads/, and completed downloads."""
    if not wd.exists():
        return []
    out = []
    for p in wd.rglob("*"):
        if not p.is_file():
            continue
        if p.parent.name == download.DOWNLOADS and (p.name.endswith(".lock")):
            continue
        out.append(p)
    return out


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _rebuilt(name: str, wd: Path) -> nn.Module:
    state, _ = weights.load_weights(name, wd)
    model = build_model(get_spec(name))
    model.load_state_dict(state, strict=True)
    return model


def _input(spec: registry.ModelSpec, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------- hashing, paths


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


def test_registry_urls_are_pinned() -> None:
    for spec in REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{40}", spec.commit), spec.name
        assert re.fullmatch(r"[0-9a-f]{40}", spec.git_blob_sha1), spec.name
        assert spec.url == f"https://github.com/{spec.repo}/raw/{spec.commit}/{spec.path}"


def test_resolve_weights_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFFECTLAB_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert weights.resolve_weights_dir(None) == tmp_path / "cache" / "affectlab" / "weights"
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights.resolve_weights_dir(None) == tmp_path / "env"
    assert weights.resolve_weights_dir(tmp_path / "flag") == tmp_path / "flag"
    assert weights.resolve_weights_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_weights_path_layout(tmp_path: Path) -> None:
    assert weights.weights_path(B0, tmp_path) == tmp_path / "enet_b0_8_best_vgaf.safetensors"
    assert weights.weights_path("enet_b0_8_best_vgaf.onnx", tmp_path) == tmp_path / "enet_b0_8_best_vgaf.onnx"
    assert weights.weights_path("engagement_single_attention", tmp_path) == tmp_path / "engagement_single_attention"
    assert not weights.is_present(B0, tmp_path)


# --------------------------------------------------------------------------------------------------- download


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
    download.download(url, tmp_path / "h.bin", _blob_sha1(payload), "h", progress=False,
                     on_progress=lambda got, total: seen.append((got, total)))
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


# --------------------------------------------------------------------------------------------------- fetch


def test_fetch_converts_to_safetensors(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, b0_published: tuple[nn.Module, Path]
) -> None:
    module, pt = b0_published
    sha = download.git_blob_sha1(pt)
    _pin_hash(monkeypatch, B0, sha)
    assert get_spec(B0).url.startswith("https://github.com/sb-ai-lab/EmotiEffLib/raw/")
    url = server.serve("/enet_b0_8_best_vgaf.pt", pt.read_bytes())
    wd = tmp_path / "w"
    out = weights.fetch(B0, wd, progress=False, url=url)
    assert out == wd / "enet_b0_8_best_vgaf.safetensors" and weights.is_present(B0, wd)
    assert sorted(p.name for p in _trusted_files(wd)) == ["enet_b0_8_best_vgaf.safetensors"]
    meta = weights.read_metadata(B0, wd)
    assert meta["verified"] == "true" and meta["source_sha1"] == sha
    assert meta["arch"] == "tf_efficientnet_b0" and meta["num_outputs"] == "8" and meta["name"] == B0
    x = _input(get_spec(B0))
    assert torch.equal(_forward(_rebuilt(B0, wd), x), _forward(module, x))
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] and row["path"] == str(out) and row["classes"] == 8
    # Verified weights are there: a second fetch downloads nothing.
    weights.fetch(B0, wd, progress=False, url=url)
    assert len(server.requests_for("/enet_b0_8_best_vgaf.pt")) == 1


def test_fetch_hash_mismatch_stores_nothing(
    tmp_path: Path, server: Server, b0_published: tuple[nn.Module, Path]
) -> None:
    _, pt = b0_published
    url = server.serve("/enet_b0_8_best_vgaf.pt", pt.read_bytes())
    wd = tmp_path / "w"
    with pytest.raises(HashMismatchError) as err:
        weights.fetch(B0, wd, progress=False, url=url)
    assert get_spec(B0).git_blob_sha1 in str(err.value) and download.git_blob_sha1(pt) in str(err.value)
    assert not weights.is_present(B0, wd)
    assert _trusted_files(wd) == []


def test_fetch_onnx_and_keras_store_the_file(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wd = tmp_path / "w"
    onnx_bytes = b"stand-in onnx bytes" * 100
    _pin_hash(monkeypatch, "enet_b0_8_best_vgaf.onnx", _blob_sha1(onnx_bytes))
    out = weights.fetch("enet_b0_8_best_vgaf.onnx", wd, progress=False, url=server.serve("/a.onnx", onnx_bytes))
    assert out == wd / "enet_b0_8_best_vgaf.onnx" and out.read_bytes() == onnx_bytes
    h5 = convert.HDF5_SIGNATURE + b"keras" * 100
    _pin_hash(monkeypatch, "mobilenet_7", _blob_sha1(h5))
    with caplog.at_level("WARNING", logger="models.weights"):
        out = weights.fetch("mobilenet_7", wd, progress=False, url=server.serve("/m.h5", h5))
    assert out == wd / "mobilenet_7" and out.read_bytes() == h5
    assert "cannot run" in caplog.text
    rows = {r["name"]: r for r in weights.list_models(wd)}
    assert rows["mobilenet_7"]["present"] and rows["mobilenet_7"]["runnable"] is False
    assert rows["enet_b0_8_best_vgaf.onnx"]["present"] and rows["enet_b0_8_best_vgaf.onnx"]["verified"]
    assert not rows[B0]["present"] and rows[B0]["verified"] is None
    with pytest.raises(CheckpointFormatError):
        weights.load_weights("enet_b0_8_best_vgaf.onnx", wd)


def test_fetch_defaults_through_the_mirror(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch,
                                          b0_published: tuple[nn.Module, Path]) -> None:  # fmt: skip
    """`python -m models fetch --defaults`: the emotion and engagement models, from AFFECTLAB_WEIGHTS_MIRROR's host."""
    from urllib.parse import urlsplit

    from models.cli import main
    from models.registry import DEFAULT_APP_MODELS, ENGAGEMENT_MODEL

    h5 = convert.HDF5_SIGNATURE + b"engagement" * 100
    pt = b0_published[1].read_bytes()
    for name, data in ((B0, pt), (ENGAGEMENT_MODEL, h5)):
        _pin_hash(monkeypatch, name, _blob_sha1(data))
        server.serve("/mirror" + urlsplit(get_spec(name).url).path, data)
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_MIRROR", server.url("/mirror/"))
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("AFFECTLAB_MODEL", raising=False)
    assert main(["fetch", "--defaults", "--quiet"]) == 0
    assert all(weights.is_present(n, tmp_path / "w") for n in DEFAULT_APP_MODELS)
    assert weights.read_metadata(B0, tmp_path / "w")["verified"] == "true"
    assert server.requests_for("/mirror" + urlsplit(get_spec(ENGAGEMENT_MODEL).url).path)
    assert main(["fetch"]) == 2, "no name and no --defaults: a setup error"


# --------------------------------------------------------------------------------------------------- import


def test_import_refuses_mismatch_without_flag(tmp_path: Path, b0_published: tuple[nn.Module, Path]) -> None:
    _, pt = b0_published
    wd = tmp_path / "w"
    with pytest.raises(HashMismatchError) as err:
        convert.import_checkpoint(pt, B0, wd)
    msg = str(err.value)
    assert get_spec(B0).git_blob_sha1 in msg and download.git_blob_sha1(pt) in msg and "--trust-unverified" in msg
    assert _trusted_files(wd) == []


def test_import_trust_unverified(
    tmp_path: Path, server: Server, b0_published: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, pt = b0_published
    wd = tmp_path / "w"
    out = convert.import_checkpoint(pt, B0, wd, trust_unverified=True)
    assert out == weights.weights_path(B0, wd)
    meta = weights.read_metadata(B0, wd)
    assert meta["verified"] == "false" and meta["source_sha1"] == download.git_blob_sha1(pt)
    x = _input(get_spec(B0))
    assert torch.equal(_forward(_rebuilt(B0, wd), x), _forward(module, x))
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] is False and "unverified" in row["note"]
    assert sorted(p.name for p in _trusted_files(wd)) == ["enet_b0_8_best_vgaf.safetensors"]
    # fetch replaces unverified weights with verified ones.
    _pin_hash(monkeypatch, B0, download.git_blob_sha1(pt))
    weights.fetch(B0, wd, progress=False, url=server.serve("/b0.pt", pt.read_bytes()))
    assert weights.read_metadata(B0, wd)["verified"] == "true"


def test_import_verified_when_hash_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    module, pt = mbf_published
    _pin_hash(monkeypatch, MBF, download.git_blob_sha1(pt))
    convert.import_checkpoint(pt, MBF, tmp_path)
    assert weights.read_metadata(MBF, tmp_path)["verified"] == "true"
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path), x), _forward(module, x))


def test_import_wrong_architecture(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    with pytest.raises(CheckpointFormatError, match="do not fit"):
        convert.import_checkpoint(pt, B0, tmp_path / "w", trust_unverified=True)
    assert _trusted_files(tmp_path / "w") == []


def test_import_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a pickle")
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        convert.import_checkpoint(junk, B0, tmp_path / "w", trust_unverified=True)
    with pytest.raises(CheckpointFormatError, match="HDF5"):
        convert.import_checkpoint(junk, "mobilenet_7", tmp_path / "w", trust_unverified=True)
    assert _trusted_files(tmp_path / "w") == []


def test_import_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        convert.import_checkpoint(tmp_path / "nope.pt", B0, tmp_path)


def test_import_state_dict_file(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    module, _ = mbf_published
    sd = tmp_path / "sd.pt"
    torch.save({"state_dict": module.state_dict()}, sd)
    convert.import_checkpoint(sd, MBF, tmp_path / "w", trust_unverified=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path / "w"), x), _forward(module, x))


def test_cuda_saved_checkpoint_loads_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    """A file saved from a GPU: same bytes as a CPU save except each storage's location tag reads ``cuda:0``.

    ``torch.save`` writes ``location_tag(storage)`` into ``data.pkl``; patching it produces exactly what a CUDA save
    writes, without a GPU. ``torch.load`` without ``map_location`` then fails on a CPU-only machine.
    """
    module, _ = mbf_published
    pt = tmp_path / "cuda_saved.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(module, pt)
    with zipfile.ZipFile(pt) as zf:
        data_pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        raw = zf.read(data_pkl)
    assert b"cuda:0" in raw and b"\x8c\x03cpu" not in raw and b"X\x03\x00\x00\x00cpu" not in raw
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(pt, weights_only=False)
    convert.import_checkpoint(pt, MBF, tmp_path / "w", trust_unverified=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path / "w"), x), _forward(module, x))


def test_weights_verified_is_the_one_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    """Absent or unreadable: None; imported unverified: False; the registry's file: True (list_models agrees)."""
    _, pt = mbf_published
    wd = tmp_path / "w"
    assert weights.weights_verified(MBF, wd) is None
    convert.import_checkpoint(pt, MBF, wd, trust_unverified=True)
    assert weights.weights_verified(MBF, wd) is False
    _pin_hash(monkeypatch, MBF, download.git_blob_sha1(pt))
    assert weights.weights_verified(MBF, wd) is False, "imported unverified: stays so until imported or fetched again"
    convert.import_checkpoint(pt, MBF, wd)
    assert weights.weights_verified(MBF, wd) is True
    assert next(r for r in weights.list_models(wd) if r["name"] == MBF)["verified"] is True
    weights.weights_path(B0, wd).write_bytes(b"garbage")
    assert weights.weights_verified(B0, wd) is None
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] is False and "unreadable" in row["note"]


# --------------------------------------------------------------------------------------------------- loading


def test_load_weights_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    module, pt = mbf_published
    convert.import_checkpoint(pt, MBF, tmp_path, trust_unverified=True)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling while loading weights")

    class NoUnpickler:
        def __init__(self, *args: object, **kwargs: object) -> None:
            forbidden()

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    state, meta = weights.load_weights(MBF, tmp_path)
    assert meta["name"] == MBF
    model = build_model(get_spec(MBF))
    model.load_state_dict(state, strict=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(model, x), _forward(module, x))


def test_load_weights_missing(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="models fetch enet_b0_8_best_vgaf"):
        weights.load_weights(B0, tmp_path)


def test_load_weights_rejects_another_models_file(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    convert.import_checkpoint(pt, MBF, tmp_path, trust_unverified=True)
    shutil.copy(weights.weights_path(MBF, tmp_path), weights.weights_path(B0, tmp_path))
    with pytest.raises(CheckpointFormatError, match="mbf_va_mtl"):
        weights.load_weights(B0, tmp_path)


def test_load_weights_damaged_file(tmp_path: Path) -> None:
    weights.weights_path(B0, tmp_path).write_bytes(b"garbage")
    with pytest.raises(CheckpointFormatError, match="fetch"):
        weights.load_weights(B0, tmp_path)


# --------------------------------------------------------------------------------------------------- backbones


TORCH_ARCH_NAMES = [
    B0,
    MBF,
    pytest.param("enet_b2_8", marks=pytest.mark.slow),
    pytest.param("mobilevit_va_mtl", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", TORCH_ARCH_NAMES)
def test_published_roundtrip_and_split_head(name: str, tmp_path: Path) -> None:
    """Published module -> import -> rebuilt model: same outputs; split_head gives the reference's features."""
    spec = get_spec(name)
    module = random_published_module(spec, seed=5)
    x = _input(spec, n=3)
    expected = _forward(module, x)
    convert.import_checkpoint(save_published(module, tmp_path / spec.filename), name, tmp_path, trust_unverified=True)
    model = _rebuilt(name, tmp_path)
    assert (_forward(model, x) - expected).abs().max().item() <= 1e-5
    backbone, head = split_head(model, spec)
    assert isinstance(head, nn.Linear) and head.out_features == spec.num_outputs
    feats = _forward(backbone, x)
    assert feats.shape == (3, spec.feature_dim)
    assert (head(feats) - expected).abs().max().item() <= 1e-5
    assert feats.std(0).max().item() > 1e-3  # random weights still give input-dependent features


def test_build_model_rejects_keras() -> None:
    with pytest.raises(CheckpointFormatError):
        build_model(get_spec("mobilenet_7"))
    with pytest.raises(CheckpointFormatError):
        build_model(get_spec("engagement_single_attention"))


def test_build_model_uses_tf_variants() -> None:
    model = build_model(get_spec(B0))
    assert type(model.conv_stem).__name__ == "Conv2dSame"
    assert model.bn1.eps == pytest.approx(1e-3)


def test_onnx_export_and_install(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    spec = get_spec(MBF)
    paths = install_random_weights([MBF, "mbf_va_mtl.onnx"], tmp_path / "w", seed=9)
    graph = onnx.load(str(paths["mbf_va_mtl.onnx"])).graph
    assert graph.node[-1].op_type == "Gemm"
    assert [i.name for i in graph.input if i.name == "input"] == ["input"]
    stored = weights.weights_path("mbf_va_mtl.onnx", tmp_path / "w")
    assert stored.read_bytes() == paths["mbf_va_mtl.onnx"].read_bytes()
    sess = ort.InferenceSession(str(stored), providers=["CPUExecutionProvider"])
    x = _input(spec, n=3)  # dynamic batch
    onnx_out = sess.run(None, {"input": x.numpy()})[0]
    torch_out = _forward(_rebuilt(MBF, tmp_path / "w"), x).numpy()
    assert np.abs(onnx_out - torch_out).max() <= 1e-4


def test_export_requires_gemm_tail(tmp_path: Path) -> None:
    spec = get_spec(MBF)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 4), nn.ReLU())
    with pytest.raises(AssertionError, match="Gemm"):
        export_published_onnx(module, spec, tmp_path / "x.onnx")


def test_random_modules_are_deterministic(mbf_published: tuple[nn.Module, Path]) -> None:
    module, _ = mbf_published  # seed 4
    a = module.state_dict()
    b = random_published_module(MBF, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all((v > 0).all() for k, v in a.items() if k.endswith("running_var"))
    assert not any(torch.equal(v, torch.ones_like(v)) for k, v in a.items() if k.endswith("running_var"))
    assert not any(torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if k.endswith(("running_mean", "bias")))


def test_published_pickle_names_top_level_mobilefacenet(mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    with zipfile.ZipFile(pt) as zf:
        raw = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"mobilefacenet" in raw
    assert b"models.mobilefacenet" not in raw


def test_no_env_reads_outside_settings() -> None:
    src = Path(weights.__file__).read_text()
    assert "os.environ" not in src and "getenv" not in src
