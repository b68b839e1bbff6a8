"""Where stored backbone features live, and the one way to read them: face rows, pending, or one file per video.

A still keeps each face's features in its row (``faces.features``, the forms of :mod:`db.codecs`). A video's wait
in ``pending_features`` while it is analysed (apart from ``faces``, so that moving them frees whole pages, which the
next recordings reuse; the face row holds ``features = b''``, :data:`IN_FILE`). When the video's analysis is
finished (engagement, tracks and persons computed and stored: :func:`db.ingest.store_files` for a whole video,
:func:`db.ingest_finish.store_finish` for one stored in stretches), they move into one columnar file beside its media
file (:func:`move_video`), ``<media root>/<study id>/<sha256>.features.npy``: a NumPy structured array of
``(id int64, f uint8[L])`` in face-id order, ``f`` the exact stored bytes (so every export is byte-equal before
and after the move). The file is written to a temporary name, fsynced and moved into place (owner-only, like the
media files); ``media.features_file`` then holds ``"<count>:<size>:<sha256>"`` of it. Counts of faces with
features (``features IS NOT NULL``) are unchanged by the move.

The database grows by ~650-700 bytes per video face instead of ~2,050 (``bench/bench_storage.py``): the 1,288
bytes of a compact 1280-d vector move to the file (1,296 bytes a face there). A video whose faces' features
differ in length (float32 rows of an old store next to compact ones) keeps them where they are.

Every reader goes through :func:`stored_bytes` / :func:`features`: the exports, fine-tuning
(:mod:`db.training`), persons' appearance (:mod:`db.roster`), ``Recordings.face_features``/``features_of``.
A file is checked when opened: its size and row count against ``media.features_file`` (:func:`verify` also
checks the sha256). The store tells a session where the media root is (:func:`bind`, in
``LabelStore.transaction``); a session without one (a bare session of a test or a bench) keeps features in rows.
``delete_media`` removes the file with the media file (:func:`file_path`); ``compact --drop-features`` removes it
(:func:`drop_file`); ``Upkeep.backup`` copies the files beside the database copy (:func:`backup_files`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from db.codecs import features_from_bytes
from db.errors import StoreError
from db.media_files import FILE_MODE, make_private_dir, write_private
from db.schema import Face, Media, PendingFeatures

ROOT_KEY = "affectlab_media_root"
"""``Session.info`` key of the media root the feature files live under (:func:`bind`)."""
IN_FILE = b""
"""``faces.features`` of a face whose features are in its video's file (a face with ``feature_dim`` 0 never is)."""
SUFFIX = ".features.npy"
BATCH = 4096
"""Faces per query while moving or reading."""


class FeatureFileError(StoreError):
    """A video's feature file is missing, or differs from what the database recorded of it."""

    def __init__(self, path: Path | None, reason: str) -> None:
        self.path = path
        super().__init__(
            f"the feature file {path} of a video {reason}; restore it from a backup (with its database), or run "
            "`python -m db compact --study S --drop-features` to drop the features of the study's finished videos"
        )


@dataclass(frozen=True)
class FileInfo:
    """What the database records of a feature file: rows, bytes, sha256 (``media.features_file``)."""

    count: int
    size: int
    sha256: str

    def text(self) -> str:
        """The column's text form."""
        return f"{self.count}:{self.size}:{self.sha256}"

    @classmethod
    def parse(cls, text: str) -> FileInfo:
        """The record of the column's text."""
        count, size, sha = text.split(":")
        return cls(int(count), int(size), sha)


def bind(session: Session, root: Path | None) -> None:
    """Tells ``session`` the media root the feature files live under (None: features stay in rows)."""
    session.info[ROOT_KEY] = None if root is None else Path(root)


def media_root(session: Session) -> Path | None:
    """The media root bound to ``session`` (:func:`bind`), None when none is."""
    root = session.info.get(ROOT_KEY)
    return None if root is None else Path(root)


def file_path(root: Path, study_id: int, sha256: str) -> Path:
    """Where the feature file of a video lives (whether or not it is there)."""
    return Path(root) / str(int(study_id)) / f"{sha256}{SUFFIX}"


def _media_file(session: Session, media_id: int) -> tuple[Path | None, FileInfo | None]:
    """The feature file of a media item and its record (Nones when it has none)."""
    row = session.execute(select(Media.study_id, Media.sha256, Media.features_file).where(Media.id == media_id)).first()
    if row is None or row.features_file is None:
        return None, None
    root = media_root(session)
    info = FileInfo.parse(str(row.features_file))
    if root is None:
        raise FeatureFileError(None, "is needed, but the store was opened without a media root")
    return file_path(root, int(row.study_id), str(row.sha256)), info


def _open(path: Path, info: FileInfo) -> np.ndarray:
    """The file's rows (memory-mapped), after checking its size and row count against its record."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FeatureFileError(path, "is missing") from None
    if size != info.size:
        raise FeatureFileError(path, f"holds {size} bytes, the database recorded {info.size}")
    arr: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype.names != ("id", "f") or arr.shape != (info.count,):
        raise FeatureFileError(path, f"holds {arr.shape} rows of {arr.dtype}, the database recorded {info.count}")
    return arr


def _from_file(session: Session, media_id: int, ids: Sequence[int]) -> dict[int, bytes]:
    """The stored bytes of faces of one video read from its file (faces not in it are absent)."""
    path, info = _media_file(session, media_id)
    if path is None or info is None:
        return {}
    arr = _open(path, info)
    want = np.asarray(sorted(ids), dtype=np.int64)
    pos = np.clip(np.searchsorted(arr["id"], want), 0, max(info.count - 1, 0))
    out: dict[int, bytes] = {}
    if info.count:
        found = np.asarray(arr["id"][pos]) == want
        rows = np.asarray(arr["f"][pos[found]])
        out = {int(fid): row.tobytes() for fid, row in zip(want[found], rows, strict=True)}
    return out


def _pending(session: Session, ids: Sequence[int]) -> dict[int, bytes]:
    """The pending features of faces (:class:`db.schema.PendingFeatures`; faces with none are absent)."""
    out: dict[int, bytes] = {}
    for i in range(0, len(ids), BATCH):
        stmt = select(PendingFeatures.face_id, PendingFeatures.features).where(
            PendingFeatures.face_id.in_(ids[i : i + BATCH])
        )
        out.update({int(f): bytes(d) for f, d in session.execute(stmt)})
    return out


def stored_bytes(session: Session, face_ids: Iterable[int]) -> dict[int, tuple[bytes, int]]:
    """Face id -> (stored feature bytes, values) of faces with features, read from rows or files.

    Faces without features are absent.

    Raises:
        FeatureFileError: A video's file is missing or differs from its record.
    """
    ids = list(dict.fromkeys(int(i) for i in face_ids))
    out: dict[int, tuple[bytes, int]] = {}
    in_file: dict[int, dict[int, int]] = {}  # media id -> face id -> dim
    for i in range(0, len(ids), BATCH):
        stmt = select(Face.id, Face.media_id, Face.features, Face.feature_dim).where(
            Face.id.in_(ids[i : i + BATCH]), Face.features.is_not(None), Face.feature_dim.is_not(None)
        )
        for fid, mid, data, dim in session.execute(stmt):
            if data is None or dim is None:
                continue
            if len(data) == 0 and int(dim) > 0:
                in_file.setdefault(int(mid), {})[int(fid)] = int(dim)
            else:
                out[int(fid)] = (bytes(data), int(dim))
    for mid, dims in in_file.items():
        got = _pending(session, list(dims))
        got.update(_from_file(session, mid, [i for i in dims if i not in got]))
        missing = set(dims) - set(got)
        if missing:
            path, _ = _media_file(session, mid)
            raise FeatureFileError(path, f"lacks the features of {len(missing)} faces (e.g. face {min(missing)})")
        out.update({fid: (data, dims[fid]) for fid, data in got.items()})
    return out


def features(session: Session, face_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Face id -> float32 feature vector of faces with features (see :func:`stored_bytes`)."""
    return {fid: features_from_bytes(data, dim) for fid, (data, dim) in stored_bytes(session, face_ids).items()}


# ---------------------------------------------------------------------------------------------------- moving


def staging(session: Session, kind: str) -> bool:
    """Whether new features of a media item of ``kind`` are pending (:class:`db.schema.PendingFeatures`).

    A video's are, in a session with a media root (its rows then hold :data:`IN_FILE`); else they stay in the row.
    """
    return kind == "video" and media_root(session) is not None


def add_pending(session: Session, media_id: int, items: Sequence[tuple[int, bytes]]) -> None:
    """Stores the pending features of a video's faces (face id, stored bytes), their rows holding :data:`IN_FILE`."""
    if items:
        session.execute(
            insert(PendingFeatures), [{"face_id": f, "media_id": media_id, "features": d} for f, d in items]
        )


def _in_rows(media_id: int) -> ColumnElement[bool]:
    return (Face.media_id == media_id) & (Face.feature_dim > 0) & (func.length(Face.features) > 0)


def _lengths(session: Session, media_id: int) -> set[int]:
    """The distinct byte lengths of a video's features in rows (dims > 0) and pending."""
    rows = session.scalars(select(func.length(Face.features)).where(_in_rows(media_id)).distinct())
    pending = session.scalars(
        select(func.length(PendingFeatures.features)).where(PendingFeatures.media_id == media_id).distinct()
    )
    return {int(n) for n in [*rows, *pending] if n}


def _keyset(
    session: Session, key: Any, data: Any, where: ColumnElement[bool], top: int | None = None
) -> Iterator[list[tuple[int, bytes]]]:
    """(id, bytes) of ``key``/``data`` where ``where``, by id, :data:`BATCH` at a time (ids up to ``top``: given)."""
    after = 0
    while True:
        bounded = where if top is None else where & (key <= top)
        stmt = select(key, data).where(bounded, key > after).order_by(key).limit(BATCH)
        rows = [(int(i), bytes(d)) for i, d in session.execute(stmt) if d is not None]
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _pending_batches(session: Session, media_id: int) -> Iterator[list[tuple[int, bytes]]]:
    """A video's pending features, (face id, bytes) by id, :data:`BATCH` at a time."""
    where = PendingFeatures.media_id == media_id
    return _keyset(session, PendingFeatures.face_id, PendingFeatures.features, where)


def _batches(session: Session, media_id: int) -> Iterator[list[tuple[int, bytes]]]:
    """A video's faces with features in rows, then pending ones, (id, bytes) by id, :data:`BATCH` at a time."""
    # Each batch walks the primary key from where the last one ended, up to the video's last face (``+ 0`` keeps
    # SQLite off the (media, frame) index: by it every batch read and sorted all the video's faces, crops included,
    # quadratic in the faces of a video: ~20 minutes for one 60-minute 16-student lecture's 288,000 faces).
    top = session.scalar(select(func.max(Face.id)).where(Face.media_id == media_id))
    in_rows = (Face.media_id + 0 == media_id) & (Face.feature_dim > 0) & (func.length(Face.features) > 0)
    yield from _keyset(session, Face.id, Face.features, in_rows, top)
    yield from _pending_batches(session, media_id)


def move_video(session: Session, media_id: int) -> int:
    """Moves a finished video's row and pending features into its feature file (merged with the file it has).

    Nothing moves for a still, a video still being analysed, a session without a media root (:func:`bind`), or a
    video whose features differ in length (they stay where they are). Returns how many moved.
    """
    root = media_root(session)
    media = session.execute(
        select(Media.kind, Media.analysis_status, Media.study_id, Media.sha256).where(Media.id == media_id)
    ).first()
    if root is None or media is None or media.kind != "video" or media.analysis_status != "complete":
        return 0
    lengths = _lengths(session, media_id)
    if not lengths:
        return 0
    old_path, old_info = _media_file(session, media_id)
    old = _open(old_path, old_info) if old_path is not None and old_info is not None else None
    if old is not None:
        lengths.add(int(old.dtype["f"].shape[0]))
    if len(lengths) > 1:
        return 0
    rows = session.scalars(select(Face.id).where(_in_rows(media_id)))
    pending = session.scalars(select(PendingFeatures.face_id).where(PendingFeatures.media_id == media_id))
    new_ids = np.asarray([*rows, *pending], dtype=np.int64)
    all_ids = np.union1d(np.asarray(old["id"]) if old is not None else new_ids[:0], new_ids)
    path = file_path(root, int(media.study_id), str(media.sha256))
    info = _write(path, all_ids, lengths.pop(), old, _batches(session, media_id))
    quiet = {"synchronize_session": False}  # no row's key fetched back: the session holds none of these objects
    session.execute(update(Face).where(_in_rows(media_id)).values(features=IN_FILE), execution_options=quiet)
    session.execute(delete(PendingFeatures).where(PendingFeatures.media_id == media_id), execution_options=quiet)
    session.execute(update(Media).where(Media.id == media_id).values(features_file=info.text()))
    return int(new_ids.size)


def _write(
    path: Path, ids: np.ndarray, length: int, old: np.ndarray | None, batches: Iterable[list[tuple[int, bytes]]]
) -> FileInfo:
    """Writes the feature file of a video atomically: the old file's rows and the row features, in id order.

    The rows go in by positioned writes of one batch at a time (never through a writable memory map: its dirty pages
    count in the process's memory, the whole file for a lecture), so memory stays one batch whatever the length.
    """
    make_private_dir(path.parent)
    dtype = np.dtype([("id", "<i8"), ("f", "u1", (length,))])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (int(ids.size),)}
            np.lib.format.write_array_header_1_0(fh, header)
            start = fh.tell()
            fh.truncate(start + int(ids.size) * dtype.itemsize)
            fh.flush()
            if old is not None:
                for i in range(0, old.shape[0], BATCH):
                    chunk = np.asarray(old[i : i + BATCH])
                    _put(fh.fileno(), start, dtype, np.searchsorted(ids, chunk["id"]), chunk["id"], chunk["f"])
            for rows in batches:
                got = np.asarray([i for i, _ in rows], dtype=np.int64)
                feats = np.frombuffer(b"".join(d for _, d in rows), dtype=np.uint8).reshape(-1, length)
                _put(fh.fileno(), start, dtype, np.searchsorted(ids, got), got, feats)
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        info = FileInfo(int(ids.size), os.path.getsize(tmp), _sha256(Path(tmp)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info


def _put(fd: int, start: int, dtype: np.dtype[Any], pos: np.ndarray, ids: np.ndarray, feats: np.ndarray) -> None:
    """Writes rows ``(ids, feats)`` at ascending row positions ``pos`` of the file's array, a run of rows a write."""
    if pos.size == 0:
        return
    rec = np.empty(pos.size, dtype=dtype)
    rec["id"] = ids
    rec["f"] = feats
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, pos.size], strict=True):
        os.pwrite(fd, rec[a:b].tobytes(), start + int(pos[a]) * dtype.itemsize)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(session: Session, media_id: int) -> bool:
    """Whether a video's feature file is as recorded, sha256 included (True when it has none)."""
    path, info = _media_file(session, media_id)
    if path is None or info is None:
        return True
    try:
        _open(path, info)
    except FeatureFileError:
        return False
    return _sha256(path) == info.sha256


def drop_file(session: Session, media_id: int) -> Path | None:
    """Drops a video's pending and filed features (its rows' become NULL); the file to remove, if it has one."""
    in_file = func.length(Face.features) == 0
    session.execute(update(Face).where(Face.media_id == media_id, in_file).values(features=None))
    session.execute(delete(PendingFeatures).where(PendingFeatures.media_id == media_id))
    path, _ = _media_file(session, media_id)
    if path is None:
        return None
    session.execute(update(Media).where(Media.id == media_id).values(features_file=None))
    return path


def move_back(session: Session, media_id: int) -> int:
    """Puts a video's pending and filed features back into its rows and forgets the file (removed); how many."""
    moved = 0
    for rows in _pending_batches(session, media_id):
        session.execute(update(Face), [{"id": fid, "features": data} for fid, data in rows])
        moved += len(rows)
    session.execute(delete(PendingFeatures).where(PendingFeatures.media_id == media_id))
    path, info = _media_file(session, media_id)
    if path is None or info is None:
        return moved
    arr = _open(path, info)
    for i in range(0, info.count, BATCH):
        chunk = arr[i : i + BATCH]
        session.execute(
            update(Face),
            [{"id": int(fid), "features": row.tobytes()} for fid, row in zip(chunk["id"], chunk["f"], strict=True)],
        )
    session.execute(update(Media).where(Media.id == media_id).values(features_file=None))
    path.unlink(missing_ok=True)
    return moved + info.count


def files_of(session: Session, media_ids: Sequence[int]) -> list[Path]:
    """The feature files of media items (to remove with them, or back up)."""
    out = []
    for mid in media_ids:
        path, _ = _media_file(session, mid)
        if path is not None:
            out.append(path)
    return out


def backup_files(root: Path, backup: Path) -> Path:
    """Copies every feature file under ``root`` beside a database backup (``<backup>.features/<study id>/``).

    The database copy refers to them: restoring it means putting these files back under the media root. Returns
    ``backup``.
    """
    files = sorted(Path(root).glob(f"*/*{SUFFIX}")) if Path(root).is_dir() else []
    for path in files:
        target = backup.with_name(backup.name + ".features") / path.parent.name / path.name
        make_private_dir(target.parent)
        write_private(target, path)
    return backup


def move_finished(session: Session) -> int:
    """Moves the features of every completely analysed video still holding them in rows or pending into its file.

    What an upgrade to head does once the store's media root is known (``db/migrations/env.py``); nothing without a
    media root (:func:`bind`). Returns the faces moved.
    """
    if media_root(session) is None:
        return 0
    held = or_(
        select(Face.id).where(Face.media_id == Media.id, Face.feature_dim > 0, func.length(Face.features) > 0).exists(),
        select(PendingFeatures.face_id).where(PendingFeatures.media_id == Media.id).exists(),
    )
    stmt = select(Media.id).where(Media.kind == "video", Media.analysis_status == "complete", held).order_by(Media.id)
    return sum(move_video(session, int(m)) for m in session.scalars(stmt).all())
