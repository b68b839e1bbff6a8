"""The kept media files of the label store: where they live, how they are written, read back and removed.

A media item's file (the uploaded image or video, kept so that pages can draw boxes on it and play it) lives at
``<media root>/<study id>/<sha256><suffix>``; the media root is ``<data dir>/media`` unless the store is told
otherwise. :class:`db.services.LabelStore` owns these files: ``ingest_results(..., keep_file=True)`` writes one with
the database insert, ``media_path`` finds it, ``delete_media`` removes it (and the playable copy beside it, see
:func:`playable_path`). A person track has no file of its own: deleting a track removes no file.

Every file is written to a temporary name in the same folder and moved into place with ``os.replace``, so a kept
path never holds a half-written file. Folders are created owner-only (0700) and files owner-only (0600): the media
are personal data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
PLAYABLE_TAG = ".play"
"""Infix of the playable copy of a video kept beside its file (``<sha256>.play.mp4``)."""


def base_name(filename: str) -> str:
    r"""The last component of a file name, split at ``/`` and ``\`` (``/srv/in/x.jpg`` -> ``x.jpg``).

    Stored media names are base names: a server path never reaches the database. A name ending with a separator
    keeps its last non-empty component; a name that is only separators is kept as it is.
    """
    parts = [p for p in re.split(r"[\\/]", filename) if p]
    return parts[-1] if parts else filename


def media_suffix(filename: str) -> str:
    """A safe lowercase suffix of a file's name (``.mp4``), '' when it has none usable."""
    suffix = Path(base_name(filename)).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def media_path(root: Path, study_id: int, sha256: str, filename: str) -> Path:
    """Where the kept file of a media item lives (whether or not it is there)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return Path(root) / str(int(study_id)) / f"{sha256}{media_suffix(filename)}"


def playable_path(path: Path, suffix: str = ".mp4") -> Path:
    """Where the playable (browser video) copy of a kept file lives: ``<sha256>.play<suffix>`` beside it."""
    return path.with_name(f"{path.stem}{PLAYABLE_TAG}{suffix}")


def make_private_dir(path: Path) -> Path:
    """Creates ``path`` and its missing parents owner-only (0700), and makes an existing ``path`` owner-only too."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):  # every folder created here is owner-only, not only the last
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
    with contextlib.suppress(OSError):  # a folder of another owner (e.g. a mounted volume) keeps its mode
        os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: bytes | Path) -> Path:
    """Writes ``data`` to ``path`` atomically and owner-only (0600): a temporary file, fsync, ``os.replace``.

    Args:
        path: The final file.
        data: Its bytes, or a file to copy (in blocks: a long recording is never held in memory).

    Returns:
        ``path``.
    """
    path = Path(path)
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def keep(root: Path, study_id: int, sha256: str, filename: str, data: bytes | Path) -> tuple[Path, bool]:
    """Keeps a media file (content-addressed: a file already there with these bytes is left as it is).

    Returns:
        ``(path, created)``: the kept file, and whether this call wrote it.
    """
    path = media_path(root, study_id, sha256, filename)
    size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
    if path.is_file() and path.stat().st_size == size:
        return path, False
    return write_private(path, data), True


def remove(path: Path | None) -> int:
    """Removes a kept file and its playable copies; returns how many files were removed."""
    if path is None:
        return 0
    n = 0
    for p in [path, *path.parent.glob(f"{path.stem}{PLAYABLE_TAG}.*")] if path.parent.is_dir() else [path]:
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n
