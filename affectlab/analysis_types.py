"""The analysis service's types: one outcome per file, the sources and how they are read, the options, the messages.

Shared by :mod:`affectlab.analysis` (the service), the command line, its workers and the web app, which all speak of
a file's analysis in these terms: a :class:`Source` in, a frozen :class:`FileOutcome` out. :func:`prepare` reads a
source's kind and hash (a still read once, so the bytes analysed are the bytes hashed; a video hashed in blocks,
with its size and modification time noted so that :meth:`Prepared.check_unchanged` can tell when it changes).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from db.codecs import sha256_bytes, sha256_source
from db.ingest import MediaInfo
from db.media_files import media_suffix
from models.errors import AffectLabError, BadInputError

if TYPE_CHECKING:
    from models.decode import VideoInfo
    from models.pipeline import ImageAnalysis

Status = Literal["stored", "skipped", "busy", "failed"]
"""``stored``: analysed by this run (new or resumed); ``skipped``: the study held it complete, nothing ran;
``busy``: another live run is analysing it; ``failed``: it could not be analysed (``error`` says why)."""

Progress = Callable[[float, float | None], None]
"""Called as ``progress(seconds_done, duration_or_None)`` as a video's analysis goes (not for stills)."""


@dataclass(frozen=True)
class FileOutcome:
    """What analysing one file into a study did.

    Attributes:
        file: The file's name as given.
        status: See :data:`Status`.
        kind: ``image``, ``video`` or ``unknown`` (failed before its kind was known).
        media_id: The media item (also of a skipped or a failed partial video), None otherwise.
        n_faces: Faces the media item holds (this run's and earlier runs').
        new: Whether this run created the media item.
        faces_new: Faces this run stored.
        faces_reused: Faces found stored already (a still stored again: another model's prediction joins them).
        predictions_new: Predictions this run stored.
        predictions_existing: Predictions found stored already.
        tracks: Tracks stored by this run.
        persons: Persons (tracks joined) of a video this run completed.
        crops_stored: Crops this run stored.
        features_stored: Features this run stored.
        resumed_from_s: For a video whose stopped analysis this run resumed: the time it resumed after.
        frames_analyzed: For a video: the sampled frames this run analysed.
        duration_s: A video's duration.
        error: Why the file failed or is busy, else None.
        warnings: Problems that did not stop the analysis (damaged data, no engagement, a resumed run).
    """

    file: str
    status: Status
    kind: str = "unknown"
    media_id: int | None = None
    n_faces: int = 0
    new: bool = False
    faces_new: int = 0
    faces_reused: int = 0
    predictions_new: int = 0
    predictions_existing: int = 0
    tracks: int = 0
    persons: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    resumed_from_s: float | None = None
    frames_analyzed: int | None = None
    duration_s: float | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """A file to analyse: on disk (``path``) or in memory (``data``, an upload).

    Attributes:
        name: Its name as the user gave it (kept as data; stored as a base name).
        path: The file, or None.
        data: Its bytes, or None.
        sha256: The hex sha256 of ``data`` when the caller computed it already (an upload's, computed once).
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    sha256: str | None = None

    @classmethod
    def file(cls, path: Path | str) -> Source:
        """A file on disk, named as given (bytes of the name that are no UTF-8 shown as U+FFFD: printable, storable)."""
        return cls(printable(str(path)), path=Path(path))


def printable(name: str) -> str:
    """A file name as text that prints and stores everywhere: undecodable bytes as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True)
class Options:
    """How files are analysed and stored.

    Attributes:
        fps: Video sampling rate (0: every frame).
        uploaded_by: Who ran the analysis (stored with each media item).
        commit_every_s: Seconds of video stored per transaction (a stopped run resumes from the last one).
        keep_file: Keep the file in the store (thumbnails, boxes and the player need it; never in the features-only
            mode).
        wait: Wait for a file another live run is analysing (then resume it or return its result) instead of
            returning ``busy``.
        poll_s: Seconds between two looks at such a file's claim.
        gallery_preset: Face detection preset, ``auto`` (chosen per file from the frame size and the faces of the
            first minute), ``webcam`` or ``gallery`` (:mod:`affectlab.detection`); None: webcam.
        min_face_size: Smallest face side in pixels looked for (overrides the preset's); None: the preset's.
        stream: The video stream analysed in files with several (the others are named in a warning).
    """

    fps: float = 5.0
    uploaded_by: str | None = None
    commit_every_s: float = 30.0
    keep_file: bool = True
    wait: bool = False
    poll_s: float = 1.0
    gallery_preset: str | None = None
    min_face_size: int | None = None
    stream: int = 0


class FileChangedError(BadInputError):
    """The file changed while it was analysed: what was read is not what was hashed."""

    def __init__(self, name: str, was: tuple[int, int], now: tuple[int, int] | None) -> None:
        how = "was removed" if now is None else f"was {was[0]} bytes, now {now[0]}"
        super().__init__(
            name,
            f"changed while it was analysed ({how}): left partial, not marked complete; analyse it again once it "
            "no longer changes (the same bytes resume where this run stopped)",
        )


def setup_message(exc: BaseException, database_url: str) -> str | None:
    """The one-line message of a setup problem that stops a whole run (models, store), None for any other error.

    Used alike by ``affectlab analyze`` alone and by its workers, so both say the same and exit with the same code.
    """
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, AffectLabError):
        return str(exc)
    if not isinstance(exc, SQLAlchemyError):
        return None
    from db.engine import explain_error

    return explain_error(exc, database_url)


def os_error_message(exc: OSError) -> str:
    """A file-system error while a file is read or kept, as one line that says what to do (no traceback)."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}: free space, then analyse it again (what was stored stays)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}; make the data folder (AFFECTLAB_DATA_DIR) writable"
    if exc.errno == errno.ELOOP:
        return f"a symbolic link loop{where}: fix the link"
    what = exc.strerror or exc
    return f"cannot be read or kept{where}: {what}; check the file and the data folder (AFFECTLAB_DATA_DIR)"


def media_info(result: ImageAnalysis | VideoInfo) -> MediaInfo:
    """The stored description of an analysed still or a probed video."""
    from models.pipeline import ImageAnalysis

    if isinstance(result, ImageAnalysis):
        return MediaInfo(kind="image", width=result.width, height=result.height)
    return MediaInfo(kind="video", width=result.width, height=result.height, duration_s=result.duration, fps=result.fps)


class TimeLeft:
    """Progress text with the time left, from the pace of this run so far (resumed runs start their clock anew)."""

    def __init__(self) -> None:
        """Starts the clock."""
        self._start: tuple[float, float] | None = None

    def text(self, done: float, duration: float) -> str:
        """``"12.0 of 3600.0 s analysed, about 41 min left"`` (no estimate before the pace is known)."""
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
            return f"{done:.1f} of {duration:.1f} s analysed"
        t0, d0 = self._start
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        if rate <= 0:
            return f"{done:.1f} of {duration:.1f} s analysed"
        left = max(0.0, duration - done) / rate
        when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"{done:.1f} of {duration:.1f} s analysed, about {when} left"


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class Prepared:
    """A source made ready: its kind, hash and the file the decoder reads (a still's bytes, read once)."""

    kind: str
    sha256: str
    size: int
    path: Path | None
    data: bytes | None
    stamp: tuple[int, int] | None

    def check_unchanged(self, name: str, *, rehash: bool = False) -> None:
        """Raises :class:`FileChangedError` when the file on disk is no longer the one hashed."""
        if self.stamp is None or self.path is None:
            return
        now = _stamp(self.path)
        if now != self.stamp or (rehash and sha256_source(self.path)[0] != self.sha256):
            raise FileChangedError(name, self.stamp, now)


def prepare(source: Source) -> Prepared:
    """A source made ready: its kind and hash; a still's bytes read once (the bytes analysed are the bytes hashed).

    Raises:
        BadInputError: Missing, a folder, empty, unreadable, or changing while it was hashed.
    """
    from models.decode import VIDEO_SUFFIXES, looks_like_video
    from models.images import check_image_file

    name = source.name
    if source.data is not None:
        if not source.data:
            raise BadInputError(name, "empty file")
        kind = _kind_of_bytes(name, source.data)
        digest = source.sha256 or sha256_bytes(source.data)
        return Prepared(kind, digest, len(source.data), None, source.data, None)
    path = source.path or Path(name)
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise BadInputError(name, "a symbolic link that loops or points to nothing: fix or remove the link")
        raise BadInputError(name, "is a directory" if path.is_dir() else "no such file")
    try:
        if path.stat().st_size == 0:
            raise BadInputError(name, "empty file")
        if not (path.suffix.lower() in VIDEO_SUFFIXES or looks_like_video(path)):
            check_image_file(path, name)  # size and header, before a byte is read into memory
            data = path.read_bytes()
            return Prepared("image", sha256_bytes(data), len(data), None, data, None)
        before = _stamp(path)
        digest, size = sha256_source(path)  # in blocks: a long recording is not read into memory
    except OSError as exc:
        raise BadInputError(name, f"cannot be read ({exc.strerror or exc})") from None
    got = Prepared("video", digest, size, path, None, before)
    got.check_unchanged(name)  # it changed while it was hashed
    return got


def _kind_of_bytes(name: str, data: bytes) -> str:
    """``video`` or ``image`` of an upload, by the suffix (a GIF is probed: animated = video)."""
    from models.decode import VIDEO_SUFFIXES, is_video

    suffix = Path(name).suffix.lower()
    if suffix == ".gif":
        with tempfile.NamedTemporaryFile(suffix=".gif") as tmp:
            tmp.write(data)
            tmp.flush()
            return "video" if is_video(tmp.name) else "image"
    return "video" if suffix in VIDEO_SUFFIXES else "image"


@contextmanager
def video_file(source: Source, prepared: Prepared) -> Iterator[Path]:
    """The file the decoder reads: the source's own, or an upload's bytes written to a private temporary file."""
    if prepared.path is not None:
        yield prepared.path
        return
    assert prepared.data is not None
    with tempfile.TemporaryDirectory(prefix="affectlab-video-") as tmp:
        path = Path(tmp) / f"upload{media_suffix(source.name) or '.bin'}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(prepared.data)
        yield path
