"""Verified downloads: an HTTP transfer that resumes, retries and is moved into place only when its hash matches.

Bytes go to ``<part_dir>/<file>.part`` (by default the ``downloads/`` folder beside the destination) under an
exclusive lock, so two processes never append to the same file. An interrupted transfer is resumed with an HTTP
Range request; the complete file is trusted only when its git blob SHA-1 (what ``git hash-object FILE`` prints)
equals the expected one, and then moved to its destination with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import DownloadError, HashMismatchError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

DOWNLOADS = "downloads"
"""Folder (inside the weights folder) of the ``.part`` files of unfinished transfers."""
CHUNK = 1 << 20
"""Bytes read at a time when hashing or copying a file."""
NET_CHUNK = 1 << 16
"""Bytes read at a time from the network."""
ProgressHook = Callable[[int, int | None], None]
"""Called as ``hook(bytes_so_far, total_or_None)`` while a download runs (e.g. a web page's progress bar)."""


def git_blob_sha1(path: str | Path) -> str:
    r"""The git blob SHA-1 of a file: ``sha1(b"blob %d\0" % size + bytes)``, what ``git hash-object FILE`` prints.

    The file is streamed, never read whole into memory.

    Args:
        path: The file.

    Returns:
        40 lowercase hex digits.
    """
    path = Path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha1(b"blob %d\0" % size)
        read = 0
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            read += len(chunk)
    if read != size:
        raise OSError(f"{path} changed size while being hashed ({size} -> {read} bytes)")
    return h.hexdigest()


class _Incomplete(Exception):
    """A transfer stopped early; the ``.part`` file keeps what arrived, for a resumed retry."""


_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Restart(Exception):
    """The server would not resume the ``.part`` file (416 or an unexpected range): start again from zero."""


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock, so that two processes never append to the same ``.part`` file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another process is downloading the same file (it holds {lock_path}); wait for it to finish, "
                "then run the command again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None


def _transfer(
    session: requests.Session,
    url: str,
    part: Path,
    name: str,
    *,
    progress: bool,
    timeout: float,
    on_progress: ProgressHook | None = None,
) -> None:
    """One HTTP request appending to ``part`` (resuming it with Range when it has bytes).

    Raises:
        _Incomplete: The connection broke, fewer bytes than announced arrived (``part`` keeps them), or the server
            answered a transient error status (5xx, 408, 429).
        _Restart: The server would not resume ``part``.
        DownloadError: The server answered a permanent error status (404...).
    """
    import requests
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True)
    except requests.RequestException as exc:
        raise _Incomplete(f"{url}: {exc}") from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:  # the .part is as long as the file, or longer
            raise _Restart(f"{url}: HTTP 416 on resume from byte {offset}")
        if status == 206 and offset and _content_range_start(resp.headers.get("Content-Range")) == offset:
            mode = "ab"
        elif status == 206 and offset:
            raise _Restart(f"{url}: unexpected Content-Range {resp.headers.get('Content-Range')!r}")
        elif status in (200, 206):
            mode, offset = "wb", 0  # the whole file: nothing to resume, or the server ignored Range
        elif status in _RETRYABLE_STATUS:
            raise _Incomplete(f"{url}: HTTP {status} {resp.reason or ''}".rstrip())
        else:
            reason = f" {resp.reason}" if resp.reason else ""
            raise DownloadError(
                f"{url}: HTTP {status}{reason}. Check the network and the URL; if the file moved upstream, "
                f"download it by hand and run `python -m models import-checkpoint FILE --name {name}`."
            )
        length_header = resp.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        total = offset + expected if expected is not None else None
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            file=sys.stderr,
            disable=not progress,
            leave=False,
        )
        try:
            with part.open(mode) as out:
                try:
                    for chunk in resp.iter_content(chunk_size=NET_CHUNK):
                        if chunk:
                            out.write(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                            if on_progress is not None:
                                on_progress(offset + received, total)
                except requests.RequestException as exc:
                    raise _Incomplete(f"{url}: transfer broke after {offset + received} bytes ({exc})") from exc
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
        if expected is not None and received != expected:
            raise _Incomplete(f"{url}: got {received} of {expected} announced bytes (from byte {offset})")


def download(
    url: str,
    dest: str | Path,
    expected_sha1: str,
    name: str,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
    *,
    part_dir: str | Path | None = None,
    backoff: float = 1.0,
    session: requests.Session | None = None,
    on_progress: ProgressHook | None = None,
) -> Path:
    """Downloads ``url`` to ``dest``, resuming, verifying and moving it into place atomically.

    Bytes go to ``<part_dir>/<dest name>.part`` (``part_dir`` defaults to ``dest``'s folder's ``downloads/``). A
    leftover ``.part`` is resumed with an HTTP Range request; a server that ignores Range (answers 200) or refuses it
    (416) makes the transfer restart from zero. A transfer shorter than its Content-Length, a broken connection or a
    transient HTTP status (5xx, 408, 429) is retried ``retries`` times (resuming); after that :class:`DownloadError`
    is raised and the ``.part`` stays for the next run to resume. The complete file's git blob SHA-1 must equal
    ``expected_sha1``; otherwise the ``.part`` is deleted. Only then is it moved to ``dest`` (``os.replace``). A
    ``dest`` that already has the right hash is kept.

    Args:
        url: What to download.
        dest: Where the verified file goes.
        expected_sha1: Its git blob SHA-1.
        name: Model name, for messages and the progress bar.
        progress: Show a progress bar on stderr.
        on_progress: Called with (bytes so far, total or None) as bytes arrive.
        timeout: Seconds to wait for the connection and between bytes.
        retries: Extra attempts after a broken or short transfer (each resumes).
        part_dir: Folder for the ``.part`` file.
        backoff: Seconds to wait before the first retry (doubled each time).
        session: A ``requests.Session`` to use (a new one by default).

    Returns:
        ``dest``.

    Raises:
        DownloadError: HTTP error status, network failure or truncated transfer after the retries.
        HashMismatchError: The complete file is not the expected one (nothing is kept).
    """
    import requests

    dest = Path(dest)
    expected_sha1 = expected_sha1.lower()
    if dest.is_file() and git_blob_sha1(dest) == expected_sha1:
        return dest
    part_dir = Path(part_dir) if part_dir is not None else dest.parent / DOWNLOADS
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / f"{dest.name}.part"
    own_session = session is None
    http = session if session is not None else requests.Session()
    try:
        with _exclusive(part_dir / f".{dest.name}.lock"):
            _fetch_verified(
                http,
                url,
                part,
                expected_sha1,
                name,
                progress=progress,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                on_progress=on_progress,
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dest)
    finally:
        if own_session:
            http.close()
    return dest


def _fetch_verified(
    http: requests.Session,
    url: str,
    part: Path,
    expected_sha1: str,
    name: str,
    *,
    progress: bool,
    timeout: float,
    retries: int,
    backoff: float,
    on_progress: ProgressHook | None,
) -> None:
    """Transfers ``url`` into ``part`` until it holds the file with ``expected_sha1`` (see :func:`download`).

    Resumes and retries an incomplete transfer, restarts from zero when the server refuses to resume (at most twice)
    or a resumed file has the wrong hash (once).

    Raises:
        DownloadError: After the retries or restarts.
        HashMismatchError: The complete file is not the expected one (the ``.part`` is deleted).
    """
    restarted_after_mismatch = False
    attempt = restarts = 0
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(http, url, part, name, progress=progress, timeout=timeout, on_progress=on_progress)
        except _Restart as exc:
            if part.exists() and git_blob_sha1(part) == expected_sha1:
                break  # 416: the leftover .part was already the complete, right file
            restarts += 1
            if restarts > 2:
                raise DownloadError(f"{exc}; the server keeps refusing the transfer") from None
            log.info("%s: %s; restarting from zero", name, exc)
            part.unlink(missing_ok=True)
            continue
        except _Incomplete as exc:
            if attempt >= retries:
                kept = part.stat().st_size if part.exists() else 0
                hint = (
                    f"{kept} bytes are kept in {part} (not trusted until the whole file's hash matches); "
                    "run the same command again to resume."
                    if kept
                    else f"Check the network and run the same command again, or download {url} by hand and run "
                    f"`python -m models import-checkpoint FILE --name {name}`."
                )
                raise DownloadError(f"{exc}. {hint}") from None
            attempt += 1
            log.warning("%s: %s; retry %d of %d", name, exc, attempt, retries)
            if backoff > 0:
                time.sleep(backoff * 2 ** (attempt - 1))
            continue
        actual = git_blob_sha1(part)
        if actual == expected_sha1:
            break
        part.unlink(missing_ok=True)
        if resumed and not restarted_after_mismatch:
            # The leftover bytes may have come from another version of the file: one fresh try.
            restarted_after_mismatch = True
            log.warning("%s: resumed file has the wrong hash; downloading again from zero", name)
            continue
        raise HashMismatchError(name, expected_sha1, actual, url)
