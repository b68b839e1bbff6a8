"""One long recording over several processes, stored range by range: the analysis service's path on many cores.

A file is one job, so a study of one long lecture leaves all but one core idle. When the models were opened for
more than one process (:attr:`models.analysis.AnalysisSession.range_workers`, one per core by default) and the
recording is long enough, the service (:class:`affectlab.analysis.AnalysisService`) cuts it into time ranges
(:func:`models.ranges.plan_ranges`: each starts on a detected sample, the frame numbers and samples of a run from the
start) and stores the plan with the partial media item (:mod:`db.ranges`). This process analyses the first range
left; each other range is analysed by a worker process of its own (one core each), which sends its stretches back
over a queue. This process stores every stretch (one writer, the claim held and beaten here) with that range's
resume point, so a stopped run resumes each range after its last stored frame and skips the ranges that are done.

The tracks are joined across the seams at the end as for any video: the service replays the tracker over every
stored face in frame order and links persons (:func:`models.track_results.score_tracks`), so the stored result is
the one a single process stores (same faces, boxes within a pixel, same tracks and persons).

A worker exits when this process dies; a worker that fails or dies leaves the file ``partial`` with a message, and
the next run resumes it.
"""

from __future__ import annotations

import dataclasses
import logging
import queue as queue_mod
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlab.orphans import exit_with_parent, start_apart
from core.settings import take_on
from db.claims import Claimant
from db.ranges import RangePlan, RangeState
from db.services import LabelStore
from models.errors import BadInputError

if TYPE_CHECKING:
    from affectlab.analysis_types import Progress
    from models.analysis import AnalysisSession
    from models.decode import ResumePoint
    from models.ranges import ModelOpener
    from models.video import VideoChunk, VideoConfig

log = logging.getLogger(__name__)

IN_PROCESS = False
"""Analyse the ranges one after the other in this process (tests: the same result without starting processes)."""


def plan_for(
    store: LabelStore,
    media_id: int,
    fresh: bool,
    path: Path,
    session: AnalysisSession,
    fps: float | None,
    duration: float | None,
) -> list[RangeState] | None:
    """The ranges a partial video is cut into: its stored plan, a new one, or None (one process analyses it).

    Args:
        store: The store.
        media_id: The partial media item.
        fresh: Nothing of it is stored yet (a stopped one-process run resumes as one process).
        path: The video.
        session: The models (``range_workers`` processes; an ``opener`` for the workers).
        fps: Sampling rate (None: every frame).
        duration: The video's duration from its header.
    """
    from models import ranges

    stored = store.ingest.range_states(media_id)
    if stored:
        return stored
    if not fresh or session.range_workers <= 1 or session.opener is None or session.video.adaptive is not None:
        return None
    if duration is not None and duration < 2 * ranges.MIN_RANGE_S:
        return None
    cut = ranges.plan_ranges(
        path, fps, session.range_workers, detect_every=session.video.range_period, min_range_s=ranges.MIN_RANGE_S
    )
    if len(cut) <= 1:
        return None
    plan = [
        RangePlan(
            r.number,
            None if r.start is None else r.start.time_s,
            None if r.start is None else r.start.index,
            None if r.start is None else r.start.sample,
            r.stop_index,
        )
        for r in cut
    ]
    return store.ingest.plan_ranges(media_id, plan)


def resume_point(state: RangeState) -> ResumePoint | None:
    """Where a range's analysis goes on: after its last stored frame, else after the frame before the range."""
    from models.decode import ResumePoint
    from models.types import Face

    if state.until_s is not None and state.until_frame is not None and state.until_sample is not None:
        faces = tuple(Face(box=box, det_score=score) for box, score in state.faces)
        return ResumePoint(time_s=state.until_s, index=state.until_frame, sample=state.until_sample, faces=faces)
    p = state.plan
    if p.start_s is None or p.start_frame is None or p.start_sample is None:
        return None
    return ResumePoint(time_s=p.start_s, index=p.start_frame, sample=p.start_sample)


def _chunks(
    path: str,
    name: str,
    models: tuple[Any, Any],
    fps: float | None,
    state: RangeState,
    config: VideoConfig,
    commit_every_s: float,
    progress: Progress | None = None,
) -> Any:
    from models.video import analyze_video_chunks

    detector, recognizer = models
    return analyze_video_chunks(
        path,
        name,
        detector,
        recognizer,
        fps,
        config=config,
        resume=resume_point(state),
        commit_every_s=commit_every_s,
        progress=progress,
        stop_index=state.plan.stop_frame,
    )


def _range_worker(
    opener: ModelOpener,
    path: str,
    name: str,
    fps: float | None,
    state: RangeState,
    config: VideoConfig,
    commit_every_s: float,
    out: Any,
) -> None:
    """A worker process: loads the models (one core) and sends the range's stretches, then ends."""
    take_on({}, threads=1)
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which ends its workers
    number = state.plan.number
    try:
        for chunk in _chunks(path, name, opener(), fps, state, config, commit_every_s):
            out.put(("chunk", number, chunk))
    except BadInputError as exc:
        out.put(("error", number, exc.reason))
    except Exception as exc:
        out.put(("error", number, f"{type(exc).__name__}: {exc}"))


class _Storer:
    """Stores the ranges' stretches, one at a time (the workers' from a thread, this process's own in line)."""

    def __init__(
        self, store: LabelStore, media_id: int, claimant: Claimant, check: Callable[[], None], got: Any
    ) -> None:
        self.store, self.media_id, self.claimant, self.check, self.got = store, media_id, claimant, check, got
        self.lock = threading.Lock()
        self.finals: dict[int, VideoChunk] = {}
        self.errors: dict[int, str] = {}
        self.analysed = 0

    def put(self, state: RangeState, chunk: VideoChunk) -> None:
        """Stores one stretch of a range with the range's resume point (its last: the range is done)."""
        resume = resume_point(state)
        until = chunk.until if chunk.until is not None else resume
        moved = until is not None and (resume is None or until.index != resume.index)
        with self.lock:
            if chunk.done:
                self.finals[state.plan.number] = chunk
            if not moved and not chunk.done:
                return
            self.check()  # the frames of this stretch were read from the bytes hashed
            n, c, f = self.store.ingest.store_chunk(
                self.media_id,
                chunk.faces,
                until_s=until.time_s if until is not None else 0.0,
                until_frame=until.index if until is not None else -1,
                samples=until.sample + 1 if until is not None else 0,
                claimant=self.claimant,
                range_number=state.plan.number,
                range_done=chunk.done,
            )
            self.got.faces, self.got.crops, self.got.features = (
                self.got.faces + n,
                self.got.crops + c,
                self.got.features + f,
            )


def stream_ranges(
    store: LabelStore,
    media_id: int,
    claimant: Claimant,
    check: Callable[[], None],
    path: Path,
    name: str,
    session: AnalysisSession,
    fps: float | None,
    commit_every_s: float,
    states: Sequence[RangeState],
    got: Any,
    progress: Progress | None = None,
) -> None:
    """Analyses the ranges not done, this process the first of them and a worker process each other, into the store.

    Args:
        store: The store.
        media_id: The partial media item (cut: ``states`` from :func:`plan_for`).
        claimant: The run holding the video's claim.
        check: Raises when the file changed since it was hashed (called before each stretch is stored).
        path: The video.
        name: Its name as the user gave it.
        session: The models (``opener`` loads them in the workers).
        fps: Sampling rate (None: every frame).
        commit_every_s: Seconds of video per stored stretch.
        states: The ranges as they stand.
        got: The service's running totals (``faces``, ``crops``, ``features``, ``last``, ``resumed_from_s``).
        progress: Called with this process's range's progress, scaled to the whole video.

    Raises:
        BadInputError: A range could not be analysed (its worker failed or died): the file stays partial.
    """
    resumed = [s.until_s for s in states if s.until_s is not None]
    got.resumed_from_s = min(resumed) if resumed else None
    todo = [s for s in states if not s.done]
    config = dataclasses.replace(
        session.video, keep_crops=_crops_stored(store, media_id), classify_batch=1, detect_batch=1
    )
    storer = _Storer(store, media_id, claimant, check, got)
    procs: dict[int, Any] = {}
    drain: threading.Thread | None = None
    stop = threading.Event()
    try:
        if todo and not IN_PROCESS and session.opener is not None and len(todo) > 1:
            drain = _start_workers(
                storer, todo[1:], session.opener, str(path), name, fps, config, commit_every_s, procs, stop
            )
            mine = todo[:1]
        else:
            mine = todo
        models = (session.detector, session.recognizer)
        for state in mine:
            after = [s.plan.start_s for s in states if s.plan.number > state.plan.number]
            scaled = _scaled(progress, state.plan.start_s or 0.0, after[0] if after and drain else None)
            for chunk in _chunks(str(path), name, models, fps, state, config, commit_every_s, scaled):
                storer.put(state, chunk)
        if drain is not None:
            drain.join()
    finally:
        stop.set()
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
    if storer.errors:
        number, reason = min(storer.errors.items())
        raise BadInputError(name, f"range {number + 1} of {len(states)}: {reason}; analyse it again to resume it")
    finals = [storer.finals[s.plan.number] for s in todo if s.plan.number in storer.finals]
    if not finals:  # every range was stored already (a run stopped before it ended the video): the header says
        from models.video import VideoChunk

        got.last = VideoChunk([], None, 0, 0, True, None, None, 0, 0, ())
    else:
        warnings = [w for c in finals for w in c.warnings]
        got.last = dataclasses.replace(
            finals[-1], frames_analyzed=sum(c.frames_analyzed for c in finals), warnings=tuple(dict.fromkeys(warnings))
        )


def _crops_stored(store: LabelStore, media_id: int) -> bool:
    """Whether the store keeps this video's crops: when it re-cuts them from the file, none is cut or sent."""
    from db import repo
    from db.schema import Media

    recut = store.transaction(lambda s: bool(repo.get_row(s, Media, media_id, "media").recut_crops), write=False)
    return store.store_crops and not recut


def _scaled(progress: Progress | None, start: float, end: float | None) -> Progress | None:
    """This process's range's progress as a share of the whole video (the workers go at about the same pace)."""
    if progress is None or end is None or end <= start:
        return progress

    def report(done: float, duration: float | None) -> None:
        if duration:
            progress(min(duration, duration * max(0.0, done - start) / (end - start)), duration)

    return report


def _start_workers(
    storer: _Storer,
    states: Sequence[RangeState],
    opener: ModelOpener,
    path: str,
    name: str,
    fps: float | None,
    config: VideoConfig,
    commit_every_s: float,
    procs: dict[int, Any],
    stop: threading.Event,
) -> threading.Thread:
    """Starts a worker process per range and a thread that stores what they send, until each is done or dead."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue(maxsize=1)  # a worker waits rather than piling stretches up in memory
    by_number = {s.plan.number: s for s in states}
    for s in states:
        proc = ctx.Process(
            target=_range_worker, args=(opener, path, name, fps, s, config, commit_every_s, out), daemon=True
        )
        start_apart(proc)
        procs[s.plan.number] = proc

    def run() -> None:
        left = set(by_number)
        while left and not stop.is_set():
            try:
                kind, number, payload = out.get(timeout=0.5)
            except queue_mod.Empty:
                for n in list(left):
                    if not procs[n].is_alive() and out.empty():
                        storer.errors[n] = f"its worker process died (exit code {procs[n].exitcode})"
                        left.discard(n)
                continue
            if kind == "error":
                storer.errors[number] = payload
                left.discard(number)
                continue
            try:
                storer.put(by_number[number], payload)
            except Exception as exc:  # the store or the claim failed: the run stops, the stored stretches stay
                storer.errors[number] = f"storing failed ({type(exc).__name__}: {exc})"
                stop.set()
                return
            if payload.done:
                left.discard(number)

    thread = threading.Thread(target=run, name="affectlab-range-store", daemon=True)
    thread.start()
    return thread
