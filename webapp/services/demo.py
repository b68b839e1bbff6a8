"""The demo study: "Try a sample" analyses the samples into it, and old demo media are swept away."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from affectlab.analysis import AnalysisService, FileOutcome, Options, Source
from db.services import LabelStore
from webapp.services.analysis import Progress, SessionLoader, video_progress
from webapp.services.library import delete_media_item
from webapp.services.studies import study_media

log = logging.getLogger(__name__)


DEMO_STUDY = "demo"
"""The study "Try a sample" analyses into; its media are deleted after ``AFFECTLAB_DEMO_TTL_HOURS``."""


DEMO_SWEEP_EVERY_S = 3600.0
"""Least seconds between two sweeps of the demo study by one server process."""


def sample_names(samples_dir: Path | None) -> list[str]:
    """The sample files ready in ``samples_dir`` (``affectlab.samples``), empty when they are absent or wrong."""
    from affectlab.samples import present_samples

    return [p.name for p in present_samples(samples_dir)] if samples_dir is not None else []


def try_samples(
    samples_dir: Path | None,
    *,
    store: LabelStore,
    load_session: SessionLoader,
    media_dir: Path | None,
    uploaded_by: str | None,
    fps: float = 5.0,
    progress: Progress | None = None,
) -> list[FileOutcome]:
    """The "Try a sample" button: every sample analysed into the demo study (one it holds already is not analysed).

    Args:
        samples_dir: The samples folder (``AFFECTLAB_SAMPLES_DIR``).
        store: The label store.
        load_session: Loads the models (called once, and only when a sample is new to the demo study).
        media_dir: Where media files are kept, None in the features-only mode.
        uploaded_by: Who asked.
        fps: Video sampling rate.
        progress: Called with ``(fraction of all samples, message)``.

    Returns:
        One outcome per sample, in manifest order (empty when the samples are absent).

    Raises:
        AffectLabError: The models could not be loaded (e.g. ``WeightsMissingError``); nothing was analysed.
    """
    from affectlab.samples import present_samples

    paths = present_samples(samples_dir) if samples_dir is not None else []
    report = progress or (lambda _f, _m: None)
    options = Options(fps=fps, uploaded_by=uploaded_by, keep_file=media_dir is not None)
    service = AnalysisService(store, DEMO_STUDY, load_session, options)
    outcomes: list[FileOutcome] = []
    for i, path in enumerate(paths):

        def on_file(fraction: float, message: str, i: int = i, name: str = path.name) -> None:
            report((i + fraction) / len(paths), f"{name}: {message}")

        outcomes.append(service.analyze(Source(path.name, path=path), progress=video_progress(on_file)))
    report(1.0, "done")
    return outcomes


def clear_demo(store: LabelStore, media_dir: Path | None, ttl_hours: float, now: datetime | None = None) -> int:
    """Deletes the demo study's media older than ``ttl_hours`` (with their faces, labels and kept files).

    Returns:
        How many media items were deleted (0 when ``ttl_hours`` is 0: demo media are then kept).
    """
    if ttl_hours <= 0:
        return 0
    now = now or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)  # SQLite returns naive UTC times
    cutoff = now - timedelta(hours=ttl_hours)
    n = 0
    for m in study_media(store, DEMO_STUDY):
        created = m.created_at if m.created_at.tzinfo else m.created_at.replace(tzinfo=UTC)
        if created <= cutoff:
            delete_media_item(store, DEMO_STUDY, m, media_dir)
            n += 1
    if n:
        log.info("deleted %d media item(s) of the demo study older than %g h", n, ttl_hours)
    return n


class _Sweeps:
    """When this process last swept the demo study (a sweep at most every :data:`DEMO_SWEEP_EVERY_S`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: float | None = None

    def due(self, now_s: float) -> bool:
        with self.lock:
            if self.last is not None and now_s - self.last < DEMO_SWEEP_EVERY_S:
                return False
            self.last = now_s
            return True


_SWEEPS = _Sweeps()


def clear_demo_if_due(store: LabelStore, media_dir: Path | None, ttl_hours: float) -> int | None:
    """:func:`clear_demo` on the app's first run in this process and then at most once an hour.

    Returns:
        How many media items were deleted, None when no sweep was due.
    """
    if not _SWEEPS.due(time.monotonic()):
        return None
    try:
        return clear_demo(store, media_dir, ttl_hours)
    except Exception:  # a failed sweep must not stop the page; the next one tries again
        log.exception("sweeping the demo study failed")
        return None
