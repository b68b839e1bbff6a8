"""Every user action at 10^4 to 10^7 stored faces, through the service functions the pages call (issue 19).

For each size and engine a fresh database is filled with :mod:`bench.scale_fill` (issue 19's course shape: 60-minute
16-student recordings at 5 fps, tracks of ~300 faces, predictions, features in each recording's feature file,
engagement windows, 2-3 annotators' votes, undos, skips, segments; by default in the product's layout: each
recording's file kept and no crop row, crops re-cut from the file; ``--layout crops`` stores a PNG crop per face
instead), then each action of :data:`ACTIONS` runs ``--repeat`` (3) times in a
child process of its own (a fork server's child: a fresh ``LabelStore``, no state of the fill), and the bench prints
the median, the child's peak RSS, and for each action the growth factor per decade of faces
(``(t_largest / t_smallest) ** (1 / decades)``: 1 is flat, 10 is linear). An action over ``--timeout`` seconds is
killed and shown as ``> N s``, so one slow action does not stall the bench. Database bytes per face and fill speed
are printed too.

The actions call what the pages call (``webapp/services/*.py`` and :class:`db.services.LabelStore`), in the order
the page calls them; each is one small function below, so that a page changed by another change is mirrored by
editing one function here. ``--chromium`` adds the real pages at one size (the smallest, or
``--chromium-size``), served by ``streamlit run`` on the SQLite database and driven by Playwright with Debian's
Chromium: Review opened (first face shown), a key press to the next face shown, Library, Classroom, Dataset.

Usage::

    python bench/bench_scale.py [--sizes 10000,100000] [--engines sqlite,postgresql] [--actions review_first,...]
        [--repeat 3] [--timeout 120] [--fill bulk|product] [--layout product|crops] [--chromium] [--readme]
        [--keep DIR [--reuse]]

``--readme`` prints the tables as Markdown (for the README's bench section). ``--list`` lists the actions.
``--keep DIR --reuse`` times the SQLite studies an earlier ``--keep DIR`` run filled (upgraded first), e.g. the same
10^6-face study before and after a change, without an hour of filling.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import scale_fill  # noqa: E402

ANNOTATOR = scale_fill.ANNOTATORS[0]
"""Who presses the keys (has votes of the fill: their labelled faces are out of their queue)."""
VOTER = scale_fill.ANNOTATORS[1]
"""Who votes and undoes in the ``vote`` and ``undo`` actions."""


# ---------------------------------------------------------------------------------------------------- the actions


@dataclass
class Ctx:
    """What an action needs: the store, the study, who is acting, and a recording and class to filter on."""

    store: Any
    study: str
    media_id: int
    model_class: str
    tmp: Path
    url: str
    annotator: str = ANNOTATOR
    owner: bool = True
    media_dir: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)


def review_panel(ctx: Ctx, flt: Any = None, opened: int | None = None) -> int | None:
    """The Review panel as ``webapp/views/review.py`` builds it (``_panel`` -> ``_queue`` -> ``_item``).

    Returns:
        The face shown (None: queue empty).
    """
    from db.review import ReviewFilter
    from webapp.services import review, studies

    flt = flt or ReviewFilter()
    rules = studies.study_settings(ctx.store, ctx.study)
    media = studies.study_media(ctx.store, ctx.study)  # the File filter's choices
    if flt.media_id is not None and flt.media_id in {m.id for m in media}:
        studies.media_tracks(ctx.store, flt.media_id, ctx.study, with_windows=False)  # the Track filter's choices
    view = review.queue_view(ctx.store, ctx.study, "uncertainty", ctx.annotator, flt, opened)
    if view.face_id is None:
        return None
    review_item(ctx, view.face_id, rules)
    return view.face_id


def review_item(ctx: Ctx, face_id: int, rules: Any) -> None:
    """One face of the Review panel (``_item``): the face, its context image, history and track strip."""
    from webapp.services import review

    face = review.face_for_review(ctx.store, ctx.study, face_id, ctx.annotator, rules)
    review.face_context(ctx.store, ctx.study, face, rules, ctx.owner, ctx.media_dir)
    review.face_history(ctx.store, face, ctx.annotator, rules)
    review.track_strip(ctx.store, ctx.study, face, ctx.annotator, rules, ctx.owner)


def a_review_first(ctx: Ctx) -> None:
    review_panel(ctx)


def a_review_by_file(ctx: Ctx) -> None:
    from db.review import ReviewFilter

    review_panel(ctx, ReviewFilter(media_id=ctx.media_id))


def a_review_by_class(ctx: Ctx) -> None:
    from db.review import ReviewFilter

    review_panel(ctx, ReviewFilter(model_label=ctx.model_class))


def a_review_by_annotator(ctx: Ctx) -> None:
    """The queue filtered by another annotator's labels ("Labelled by" another person)."""
    from db.review import ReviewFilter

    review_panel(ctx, ReviewFilter(labelled_by=VOTER))


def a_key_press(ctx: Ctx) -> None:
    """A class key on the face shown: the vote, then the panel again with the next face (as the fragment reruns)."""
    from webapp.services import review

    shown = ctx.state.get("shown")
    if shown is None:  # the face on screen before the key (not timed: the page was already drawn)
        raise RuntimeError("key_press needs the face shown; run through _timed_runs")
    review.correct(ctx.store, ctx.annotator, face_id=shown, label=ctx.model_class)
    ctx.state["shown"] = review_panel(ctx)


def _key_press_setup(ctx: Ctx) -> None:
    from db.review import ReviewFilter
    from webapp.services import review

    q = review.review_queue(ctx.store, ctx.study, "uncertainty", ctx.annotator, ReviewFilter(), limit=1)
    ctx.state["shown"] = q.items[0].face_id if q.items else None


def a_my_labels(ctx: Ctx) -> None:
    """ "My labels" (``_mine``): the annotator's labelled faces, then the first one opened."""
    from webapp.services import review, studies

    rules = studies.study_settings(ctx.store, ctx.study)
    studies.study_media(ctx.store, ctx.study)
    rows = review.my_labels(ctx.store, ctx.study, ctx.annotator).items
    if rows:
        review_item(ctx, rows[0].face_id, rules)


def a_library(ctx: Ctx) -> None:
    from webapp.services import library

    library.library_view(ctx.store, ctx.study, ctx.owner, ctx.media_dir)


def a_library_open(ctx: Ctx) -> None:
    """Opening one recording in the Library (``webapp/results.py`` ``show`` -> ``_video_result``), no figure."""
    from webapp.services import library

    shown = library.stored_results(ctx.store, ctx.study, [ctx.media_id], ctx.annotator, ctx.owner)
    for item in shown.items:
        library.video_view(ctx.store, ctx.study, item.media, shown.settings, ctx.owner, ctx.media_dir)
        library.recording_view(ctx.store, ctx.study, item.media, shown.settings, ctx.owner)


def a_library_figures(ctx: Ctx) -> None:
    """The recording's figures (``_video_result``): per shown track, probabilities, V/A, classes, engagement."""
    from webapp import figures
    from webapp.services import library

    shown = library.stored_results(ctx.store, ctx.study, [ctx.media_id], ctx.annotator, ctx.owner)
    for item in shown.items:
        library.video_view(ctx.store, ctx.study, item.media, shown.settings, ctx.owner, ctx.media_dir)
        view = library.recording_view(ctx.store, ctx.study, item.media, shown.settings, ctx.owner)
        for t in view.shown:
            series = view.series.get(t.track_id)
            buckets = series.buckets if series is not None else ()
            times = [b.start_s for b in buckets]
            figures.probability_timeline(times, [b.probs for b in buckets if b.n_predicted], "p")
            figures.va_timeline(times, [b.valence for b in buckets], [b.arousal for b in buckets], "va")
            figures.class_counts_timeline(times, [b.human_counts for b in buckets], "h")
            if series is not None and series.engagement:
                figures.engagement_timeline([(a, a + view.width_s, p) for a, p in series.engagement], "e")


def a_classroom(ctx: Ctx) -> None:
    """The Classroom page's tables of one recording: recordings, persons, segments, thumbnails, history."""
    from webapp.services import classroom

    videos = classroom.class_videos(ctx.store, ctx.study)
    classroom.recording_view(ctx.store, ctx.study, videos[0].id if videos else ctx.media_id, ctx.owner)


def a_class_over_time(ctx: Ctx) -> None:
    """The Classroom page's "Class over time" (owner: with the tables' CSV downloads) and its figure."""
    from webapp.services import classroom

    over = classroom.class_over_time(ctx.store, ctx.study, ctx.owner)
    classroom.class_figure(over.tables, ctx.media_id, "class-mean", "engagement_p")


def a_dataset_stats(ctx: Ctx) -> None:
    from webapp.services import exports

    exports.study_stats(ctx.store, ctx.study)


def a_db_stats(ctx: Ctx) -> None:
    """``python -m db stats --study S`` (its own store, as the command makes it; output discarded)."""
    from db import cli

    os.environ["DATABASE_URL"] = ctx.url
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["stats", "--study", ctx.study])
    if rc != 0:
        raise RuntimeError(f"db stats exited with {rc}")


def _export(ctx: Ctx, fmt: str, suffix: str) -> None:
    out = ctx.tmp / f"export-{fmt}-{time.monotonic_ns()}{suffix}"
    ctx.store.exports.export(ctx.study, fmt, out)
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)


def a_export_csv(ctx: Ctx) -> None:
    _export(ctx, "csv", ".csv")


def a_export_parquet(ctx: Ctx) -> None:
    _export(ctx, "parquet", ".parquet")


def a_export_features(ctx: Ctx) -> None:
    _export(ctx, "features", ".npz")


def a_export_imagefolder(ctx: Ctx) -> None:
    _export(ctx, "imagefolder", ".zip")


def a_vote(ctx: Ctx) -> None:
    """Storing one vote (``review.correct``) on the next face of a list taken before timing."""
    from webapp.services import review

    ids = ctx.state["faces"]
    review.correct(ctx.store, VOTER, face_id=ids.pop(), label=ctx.model_class)


def _vote_setup(ctx: Ctx) -> None:
    from sqlalchemy import select

    from db.schema import Face

    stmt = select(Face.id).where(Face.media_id == ctx.media_id).order_by(Face.id.desc()).limit(50)
    ctx.state["faces"] = ctx.store.transaction(lambda s: list(s.scalars(stmt)), write=False)


def a_undo(ctx: Ctx) -> None:
    """Undo (``review.undo_last``): the voter's newest active correction in the study."""
    from webapp.services import review

    if review.undo_last(ctx.store, ctx.study, VOTER) is None:
        raise RuntimeError(f"{VOTER} has nothing to undo")


@dataclass(frozen=True)
class Action:
    """One user action: what the issue's table calls it, the function, and untimed set-up before its runs."""

    what: str
    fn: Callable[[Ctx], None]
    setup: Callable[[Ctx], None] | None = None


ACTIONS: dict[str, Action] = {
    "review_first": Action("Review: first face of the queue", a_review_first),
    "review_by_file": Action("Review: first face, filtered by file", a_review_by_file),
    "review_by_class": Action("Review: first face, filtered by class", a_review_by_class),
    "review_by_annotator": Action("Review: first face, filtered by another annotator's labels", a_review_by_annotator),
    "key_press": Action("Review: key press (vote, next face, counts)", a_key_press, _key_press_setup),
    "my_labels": Action('Review: "My labels"', a_my_labels),
    "library": Action("Library listing", a_library),
    "library_open": Action("Library: opening one recording", a_library_open),
    "library_figures": Action("Library: the recording's figures", a_library_figures),
    "classroom": Action("Classroom tables (one recording)", a_classroom),
    "class_over_time": Action("Classroom: the class over time (owner)", a_class_over_time),
    "dataset_stats": Action("Dataset statistics", a_dataset_stats),
    "db_stats": Action("`db stats`", a_db_stats),
    "export_csv": Action("export CSV", a_export_csv),
    "export_parquet": Action("export Parquet", a_export_parquet),
    "export_features": Action("export features", a_export_features),
    "export_imagefolder": Action("export imagefolder", a_export_imagefolder),
    "vote": Action("storing a vote", a_vote, _vote_setup),
    "undo": Action("undo", a_undo),
}
"""Every action timed, in the order they run (reads before the writes that change the study)."""


# ---------------------------------------------------------------------------------------------------- running


@dataclass
class Timing:
    """One action at one size on one engine."""

    runs: list[float] = field(default_factory=list)
    timeout: float | None = None
    """Set when a run went over the timeout (the runs before it are kept)."""
    rss_mb: float | None = None
    load: float | None = None
    """The machine's 1-minute load average when the runs ended (``os.getloadavg``): a shared 2-core box."""
    error: str | None = None
    cut: bool = False
    """Fewer runs than asked: together they took longer than the timeout."""

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    def cell(self) -> str:
        if self.error:
            return "error"
        if self.timeout is not None and not self.runs:
            return f"> {self.timeout:g} s"
        m = self.median
        return "" if m is None else fmt_s(m) + ("*" if self.timeout is not None or self.cut else "")


def fmt_s(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def _child(
    url: str,
    study: str,
    media_id: int,
    model_class: str,
    name: str,
    repeat: int,
    conn: Any,
    data_dir: Path | None = None,
) -> None:
    """Runs one action ``repeat`` times in this process; sends each run's seconds, then the peak RSS.

    ``data_dir``: the filled store's data folder (its media and feature files); None: a new empty one.
    """
    try:
        from db.services import LabelStore

        tmp = Path(tempfile.mkdtemp(prefix="affectlab-bench-scale-"))
        store = LabelStore(url, data_dir=data_dir if data_dir is not None else tmp / "data")
        ctx = Ctx(store=store, study=study, media_id=media_id, model_class=model_class, tmp=tmp, url=url)
        action = ACTIONS[name]
        if action.setup is not None:
            action.setup(ctx)
        for _ in range(repeat):
            t0 = time.perf_counter()
            action.fn(ctx)
            conn.send(("run", (time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
        conn.send(("rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except BaseException as e:  # reported to the parent, which prints "error" and the reason
        conn.send(("error", f"{type(e).__name__}: {e}"))


def time_action(
    mpctx: Any,
    url: str,
    study: str,
    media_id: int,
    model_class: str,
    name: str,
    repeat: int,
    timeout: float,
    data_dir: Path | None = None,
) -> Timing:
    """Times one action in a child process, killed when a run goes over ``timeout`` seconds.

    Runs stop early (fewer than ``repeat``) once they have taken ``timeout`` seconds together, so an action costs at
    most about twice its timeout.
    """
    parent, child = mpctx.Pipe(duplex=False)
    proc = mpctx.Process(target=_child, args=(url, study, media_id, model_class, name, repeat, child, data_dir))
    proc.start()
    child.close()
    t = Timing()
    t0 = time.monotonic()
    try:
        while True:
            if not parent.poll(timeout):
                t.timeout = timeout
                break
            try:
                kind, value = parent.recv()
            except EOFError:
                t.error = t.error or f"the child exited with {proc.exitcode}"
                break
            if kind == "run":
                t.runs.append(value[0])
                t.rss_mb = value[1]
                if time.monotonic() - t0 > timeout and len(t.runs) < repeat:
                    t.cut = True  # the runs so far took the action's time: no more of them
                    break
            elif kind == "rss":
                t.rss_mb = value
                break
            else:
                t.error = value
                break
    finally:
        if proc.is_alive():
            hwm = _peak_rss_mb(proc.pid)  # a cut action's peak so far
            t.rss_mb = max(t.rss_mb or 0.0, hwm or 0.0) or None
            proc.kill()
        proc.join()
    return t


def _peak_rss_mb(pid: int | None) -> float | None:
    """A live process's peak resident memory (Linux ``VmHWM``), None where unknown."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m[1]) / 1024 if m else None


def _first_recording(store: Any) -> tuple[int, str]:
    """The study's first recording and the model's most frequent class (the filters' values)."""
    from sqlalchemy import func, select

    from db.schema import Face, Media, Prediction

    def work(s: Any) -> tuple[int, str]:
        mid = s.scalar(select(func.min(Media.id)))
        cls = s.execute(
            select(Prediction.label, func.count())
            .join(Face, Face.id == Prediction.face_id)
            .where(Face.media_id == mid)
            .group_by(Prediction.label)
            .order_by(func.count().desc())
            .limit(1)
        ).first()
        return int(mid), str(cls[0])

    mid, cls = store.transaction(work, write=False)
    return int(mid), str(cls)


def _reused(store: Any) -> scale_fill.FillReport | None:
    """What an earlier fill left in ``store`` (``--reuse``: the faces and bytes), None when it holds no study."""
    from sqlalchemy import func, select

    from db.schema import Face, Media, Study

    def work(s: Any) -> int:
        stmt = select(func.count()).select_from(Face).join(Media).join(Study).where(Study.name == scale_fill.STUDY)
        return int(s.scalar(stmt) or 0)

    faces = store.transaction(work, write=False)
    if not faces:
        return None
    rep = scale_fill.FillReport(faces=faces, db_bytes=scale_fill.db_bytes(store))
    rep.free_bytes = scale_fill.free_bytes(store)
    rep.feature_bytes, rep.media_bytes = scale_fill.file_bytes(store.media_root)
    return rep


@dataclass
class SizeResult:
    """One engine at one size: the fill and every action."""

    engine: str
    faces: int
    fill: scale_fill.FillReport
    timings: dict[str, Timing]


def run_size(
    db: scale_fill.Database,
    mpctx: Any,
    size: int,
    shape: scale_fill.Shape,
    args: argparse.Namespace,
    names: Sequence[str],
    log: Callable[[str], None],
) -> tuple[SizeResult, Any]:
    """Fills a fresh database of ``size`` faces and times every action on it; returns the result and the store."""
    store = db.new_store(f"size-{size}")
    rep = _reused(store) if args.reuse else None
    if rep is None:
        log(f"[{db.engine} {size}] filling ({args.fill} path)...")
        rep = scale_fill.fill(store, replace(shape, faces=size), path=args.fill)
    log(f"[{db.engine} {size}] {rep.line()}")
    media_id, cls = _first_recording(store)
    url = store.url
    timings: dict[str, Timing] = {}
    for name in names:
        t = time_action(mpctx, url, scale_fill.STUDY, media_id, cls, name, args.repeat, args.timeout, store.data_dir)
        t.load = os.getloadavg()[0]
        timings[name] = t
        rss = f", peak {t.rss_mb:.0f} MB" if t.rss_mb else ""
        runs = ", ".join(fmt_s(r) for r in t.runs)
        log(f"[{db.engine} {size}] {name}: {t.cell()} (runs {runs}){rss}, load {t.load:.1f}")
        if t.error:
            log(f"    error: {t.error}")
    return SizeResult(db.engine, rep.faces, rep, timings), store


# ---------------------------------------------------------------------------------------------------- chromium


@contextlib.contextmanager
def _served(db_file: Path, data_dir: Path, folder: Path) -> Iterator[str]:
    """The app served on a copy-free link to the filled SQLite database (``AFFECTLAB_DATA_DIR/affectlab.sqlite3``).

    The study's kept files (the recordings its crops are re-cut from, the feature files) are linked in as
    ``AFFECTLAB_DATA_DIR/media``: without them Review would show no face of a study in the product's layout.
    """
    from tests.server import serve_app

    data = folder / "served"
    data.mkdir(parents=True, exist_ok=True)
    target = data / "affectlab.sqlite3"
    if not target.exists():
        os.link(db_file, target) if db_file.stat().st_dev == data.stat().st_dev else shutil.copy2(db_file, target)
    media = data / "media"
    if not media.exists() and (data_dir / "media").is_dir():
        media.symlink_to((data_dir / "media").resolve(), target_is_directory=True)
    with serve_app(data, data / "no-weights", folder / "server.log") as (url, _proc):
        yield url


def _idle(page: Any, timeout_ms: float) -> None:
    page.wait_for_function(
        "() => { const e = document.querySelector('[data-test-script-state]');"
        " return e && e.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=timeout_ms,
    )


FACE_LINE = r"Face (\d+), file"


def _face(page: Any) -> str:
    return str(page.evaluate(f"() => (document.body.innerText.match(/{FACE_LINE}/) || [])[1] || ''"))


def chromium_pages(
    db_file: Path, data_dir: Path, folder: Path, repeat: int, timeout: float, log: Callable[[str], None]
) -> dict[str, Timing]:
    """The real pages in Chromium on the filled SQLite database: seconds until each page is complete.

    A full-page screenshot of each page once timed goes to ``folder`` (``review_open.png``, ``key_press.png``, ...).
    """
    from playwright.sync_api import sync_playwright

    from tests.server import CHROMIUM, CHROMIUM_ARGS

    ms = timeout * 1000
    q = f"study={scale_fill.STUDY}&annotator={ANNOTATOR}"
    out: dict[str, Timing] = {}

    def timed(name: str, fn: Callable[[], None]) -> None:
        t = out.setdefault(name, Timing())
        if t.timeout is not None:
            return
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # playwright's TimeoutError, or the page showing an error
            if "Timeout" in type(e).__name__:
                t.timeout = timeout
            else:
                t.error = f"{type(e).__name__}: {e}"
            return
        t.runs.append(time.perf_counter() - t0)

    with _served(db_file, data_dir, folder) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(ms)

        def review_open() -> None:
            page.goto(f"{url}/review?{q}")
            page.get_by_text("in the study for you").wait_for()
            page.wait_for_selector('button:has-text("Undo")')
            _idle(page, ms)

        def key_press() -> None:
            before = _face(page)
            page.keyboard.press("1")
            page.wait_for_function(
                f"(old) => {{ const m = document.body.innerText.match(/{FACE_LINE}/); return m && m[1] !== old; }}",
                arg=before,
                polling="raf",
            )

        pages = {
            "library": ("library", lambda: page.get_by_text("open one to see its stored results").wait_for()),
            "classroom": ("classroom", lambda: page.get_by_role("heading", name="Class over time").wait_for()),
            "dataset": ("dataset", lambda: page.get_by_role("heading", name=re.compile(r"^Media \(")).wait_for()),
        }

        def shot(name: str) -> None:
            """What the user sees once the page is done (``DIR/chromium/NAME.png``, kept with ``--keep``)."""
            with contextlib.suppress(Exception):
                page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

        for _ in range(repeat):
            timed("review_open", review_open)
        shot("review_open")
        if out["review_open"].runs:
            page.get_by_role("heading", name="Review").click()
            for _ in range(repeat):
                timed("key_press", key_press)
                with contextlib.suppress(Exception):
                    page.wait_for_selector('button:has-text("Undo")')
                    _idle(page, ms)
            shot("key_press")
        for name, (path, done) in pages.items():
            for _ in range(repeat):

                def load(path: str = path, done: Callable[[], None] = done) -> None:
                    page.goto(f"{url}/{path}?{q}")
                    done()
                    _idle(page, ms)

                timed(name, load)
            shot(name)
        browser.close()
    for name, t in out.items():
        t.load = os.getloadavg()[0]
        log(f"[chromium] {name}: {t.cell()} (runs {', '.join(fmt_s(r) for r in t.runs)}), load {t.load:.1f}")
    return out


CHROMIUM_WHAT = {
    "review_open": "Review opened, first face shown",
    "key_press": "Review: key press to the next face shown",
    "library": "Library",
    "classroom": "Classroom (tables and class over time)",
    "dataset": "Dataset (statistics, exports, media)",
}


# ---------------------------------------------------------------------------------------------------- tables


def growth(t_small: float | None, t_big: float | None, n_small: int, n_big: int) -> str:
    """The factor per decade of faces between two sizes."""
    if not t_small or not t_big or n_big <= n_small:
        return ""
    import math

    decades = math.log10(n_big / n_small)
    g = (t_big / t_small) ** (1 / decades)
    return f"x{g:.1f}" if g >= 1 else f"x{g:.2f}"


def table(results: Sequence[SizeResult], names: Sequence[str], markdown: bool) -> list[str]:
    """One table per engine: actions by size, peak RSS at the largest size, growth per decade."""
    lines: list[str] = []
    for engine in dict.fromkeys(r.engine for r in results):
        rows = sorted((r for r in results if r.engine == engine), key=lambda r: r.faces)
        head = [f"what a person does ({engine})", *(f"{r.faces:,} faces" for r in rows), "per decade", "peak RSS"]
        body = []
        for name in names:
            cells = [r.timings[name].cell() if name in r.timings else "" for r in rows]
            first, last = rows[0], rows[-1]
            tf = first.timings.get(name)
            tl = last.timings.get(name)
            g = ""
            if tf and tl and tf.median and (tl.median or tl.timeout):
                t_big = tl.median if tl.runs else tl.timeout
                g = growth(tf.median, t_big, first.faces, last.faces)
                if not tl.runs:
                    g = "> " + g
            rss = f"{tl.rss_mb:.0f} MB" if tl and tl.rss_mb else ""
            body.append([ACTIONS[name].what, *cells, g, rss])
        body.append(["database per face", *(f"{r.fill.db_bytes / max(r.faces, 1):,.0f} B" for r in rows), "", ""])
        body.append(["of it free pages", *(f"{r.fill.free_bytes / max(r.faces, 1):,.0f} B" for r in rows), "", ""])
        body.append(
            ["feature files per face", *(f"{r.fill.feature_bytes / max(r.faces, 1):,.0f} B" for r in rows), "", ""]
        )
        body.append(["fill (faces/s)", *(f"{r.fill.faces_per_s:,.0f}" for r in rows), "", ""])
        body.append(["load average (1 min) after the actions", *(_loads(r) for r in rows), "", ""])
        lines += _render(head, body, markdown)
        lines.append("")
    return lines


def _loads(r: SizeResult) -> str:
    """The range of the machine's load average over one size's actions (empty for logs without it)."""
    loads = [t.load for t in r.timings.values() if t.load is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else ""


def _render(head: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return out
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head), *(fmt.format(*row) for row in body)]


def chromium_table(pages: dict[str, Timing], faces: int, markdown: bool) -> list[str]:
    head = [f"in Chromium (SQLite, {faces:,} faces)", "median", "load average (1 min)"]
    body = [[CHROMIUM_WHAT.get(k, k), t.cell(), "" if t.load is None else f"{t.load:.1f}"] for k, t in pages.items()]
    return _render(head, body, markdown)


# ---------------------------------------------------------------------------------------------------- main


def _seconds(text: str) -> float:
    value, unit = text.strip().split()
    return float(value) / (1000 if unit == "ms" else 1)


def from_log(paths: Sequence[Path]) -> tuple[list[SizeResult], dict[str, Timing], int]:
    """The results printed to bench logs (their lines ``[engine size] action: ...``), to print them again.

    Several logs are merged: a later line of an action at the same size and engine replaces the earlier one (e.g. a
    rerun of the slow actions with a longer timeout).
    """
    results: dict[tuple[str, int], SizeResult] = {}
    pages: dict[str, Timing] = {}
    chromium_faces = 0
    line_re = re.compile(r"^\[(\w+) (\d+)\] (\w+): (.*?) \(runs ([^)]*)\)(?:, peak (\d+) MB)?(?:, load ([\d.]+))?$")
    lines = [line for path in paths for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        fill = re.match(
            r"^\[(\w+) (\d+)\] (\d+) faces in .*; ([\d,.]+) faces/s; database .* \((\d+) bytes per face, .*\), "
            r"feature files .* \((\d+) bytes per face\)",
            line,
        )
        if fill:
            rep = scale_fill.FillReport(faces=int(fill[3]))
            rate = float(fill[4].replace(",", ""))
            rep.seconds["faces"] = rep.faces / rate if rate else 0.0  # 0: a --reuse run (no fill)
            rep.db_bytes = int(fill[5]) * rep.faces
            rep.feature_bytes = int(fill[6]) * rep.faces
            old = results.get((fill[1], int(fill[2])))
            results[(fill[1], int(fill[2]))] = SizeResult(fill[1], rep.faces, rep, old.timings if old else {})
            chromium_faces = chromium_faces or (rep.faces if fill[1] == "sqlite" else 0)
            continue
        m = re.match(r"^\[chromium\] (\w+): (.*?) \(runs ([^)]*)\)(?:, load ([\d.]+))?$", line)
        if m:
            pages[m[1]] = _timing(m[2], m[3], None)
            pages[m[1]].load = float(m[4]) if m[4] else None
            continue
        m = line_re.match(line)
        if m and (m[1], int(m[2])) in results:
            t = results[(m[1], int(m[2]))].timings[m[3]] = _timing(m[4], m[5], m[6])
            t.load = float(m[7]) if m[7] else None
    return list(results.values()), pages, chromium_faces


def _timing(cell: str, runs: str, rss: str | None) -> Timing:
    t = Timing(runs=[_seconds(r) for r in runs.split(",") if r.strip()], rss_mb=float(rss) if rss else None)
    if cell.startswith(">"):
        t.timeout = _seconds(cell[1:])
    elif cell.endswith("*"):
        t.cut = True
    elif cell == "error":
        t.error = "error"
    return t


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="faces per study, comma-separated (1e6 works too)")
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--actions", default=",".join(ACTIONS), help="comma-separated; --list shows them")
    ap.add_argument("--list", action="store_true", help="list the actions and exit")
    ap.add_argument("--repeat", type=int, default=3, help="runs per action (the median is shown)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run before an action is cut")
    ap.add_argument("--fill", choices=("bulk", "product"), default="bulk", help="scale_fill path")
    ap.add_argument("--students", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--feature-dim", type=int, default=1280)
    ap.add_argument(
        "--layout", choices=scale_fill.LAYOUTS, default="product", help="product: kept recording file, crops re-cut"
    )
    ap.add_argument("--crop", type=int, default=96, help="crops layout: crop side in pixels; 0: no crops")
    ap.add_argument("--chromium", action="store_true", help="also time the real pages in Chromium (SQLite)")
    ap.add_argument("--chromium-size", type=int, default=None, help="faces of the Chromium study (default: smallest)")
    ap.add_argument("--allow-huge", action="store_true", help=f"allow more than {scale_fill.HUGE} faces")
    ap.add_argument("--keep", type=Path, help="work (databases) in this folder and keep it")
    ap.add_argument(
        "--reuse", action="store_true", help="with --keep (SQLite): time the studies an earlier run kept, no new fill"
    )
    ap.add_argument("--readme", action="store_true", help="print the tables as Markdown")
    ap.add_argument(
        "--from-log", type=Path, nargs="+", help="print the tables of earlier runs' output, merged (with --readme)"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.from_log:
        logged, logged_pages, faces = from_log(args.from_log)
        for line in table(logged, [n for n in ACTIONS if any(n in r.timings for r in logged)], args.readme):
            print(line)
        if logged_pages:
            for line in chromium_table(logged_pages, faces, args.readme):
                print(line)
        return 0
    if args.list:
        for name, a in ACTIONS.items():
            print(f"{name:20} {a.what}")
        return 0
    names = [n.strip() for n in args.actions.split(",") if n.strip()]
    unknown = [n for n in names if n not in ACTIONS]
    if unknown:
        ap.error(f"unknown action(s) {', '.join(unknown)}: see --list")
    sizes = sorted(_ints(args.sizes))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    shape = scale_fill.Shape(
        faces=max(sizes),
        students=args.students,
        minutes=args.minutes,
        feature_dim=args.feature_dim,
        crop=args.crop,
        layout=args.layout,
    )
    folder = args.keep or Path(tempfile.mkdtemp(prefix="affectlab-bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.reuse and args.keep is None:
        ap.error("--reuse needs --keep DIR (the folder of the earlier run)")
    if not args.reuse:
        scale_fill.check_disk(shape, folder, args.allow_huge)
    chromium_size = args.chromium_size or sizes[0]
    mpctx = mp.get_context("forkserver")
    mpctx.set_forkserver_preload(["db.services", "webapp.services.review", "webapp.services.library", "scale_fill"])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.readme else sys.stdout, flush=True)

    results: list[SizeResult] = []
    pages: dict[str, Timing] = {}
    try:
        for engine in engines:
            with scale_fill.Database(engine, folder) as db:
                for size in sizes:
                    res, store = run_size(db, mpctx, size, shape, args, names, log)
                    results.append(res)
                    db_file = Path(store.engine.url.database or "") if engine == "sqlite" else None
                    data_dir = store.data_dir
                    store.close()
                    if args.chromium and engine == "sqlite" and size == chromium_size and db_file is not None:
                        try:
                            pages = chromium_pages(
                                db_file, data_dir, folder / "chromium", args.repeat, args.timeout, log
                            )
                        except Exception as e:  # no browser or server: the service timings still print
                            log(f"[chromium] not timed: {type(e).__name__}: {e}")
                    for line in table(results, names, markdown=False):
                        log(line)
                    if db_file is not None and args.keep is None:
                        db_file.unlink(missing_ok=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print(
        f"bench_scale: median of {args.repeat} runs through the service functions, fill path {args.fill}, "
        f"timeout {args.timeout:g} s per action (* = median of fewer runs: they took longer); peak RSS of the "
        "action's process at the largest size; per decade = growth of the time per 10x faces (1: flat, 10: linear)"
    )
    for line in table(results, names, args.readme):
        print(line)
    if pages:
        for line in chromium_table(pages, chromium_size, args.readme):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
