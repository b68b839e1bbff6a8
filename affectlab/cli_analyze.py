"""The ``affectlab analyze`` command: the files gathered, analysed here or by worker processes, each reported."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlab.analysis import FileOutcome, Options
from core.settings import Settings

if TYPE_CHECKING:
    from models.analysis import AnalysisSession


def print_err(msg: str) -> None:
    """Prints a line on stderr at once."""
    print(msg, file=sys.stderr, flush=True)


def media_suffixes() -> frozenset[str]:
    """Suffixes of the files picked from folders: the image suffixes and the video suffixes (``models.decode``)."""
    from models.decode import VIDEO_SUFFIXES
    from models.images import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES | VIDEO_SUFFIXES


def collect_files(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The files to analyse: files as given, folders walked (sorted, hidden entries left out) for media suffixes.

    Returns:
        The files, each once, in order, and notes on folders holding no media file.
    """
    suffixes = media_suffixes()
    files: list[Path] = []
    notes: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                q
                for q in path.rglob("*")
                if q.is_file()
                and q.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in q.relative_to(path).parts)
            )
            if not found:
                notes.append(f"{raw}: no image or video file in this folder")
            files += found
        else:
            files.append(path)
    seen: set[Path] = set()
    unique = []
    for f in files:
        try:
            key = f.resolve()
        except (OSError, RuntimeError):  # a symlink loop: kept, so that its analysis says so by name
            key = f.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, notes


@contextmanager
def _progress_bar(name: str, *, enabled: bool) -> Iterator[Callable[[float, float | None], None] | None]:
    """A tqdm bar on stderr in seconds of video, with the time left (off when stderr is not a terminal)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(
        desc=name,
        unit="s",
        total=None,
        file=sys.stderr,
        disable=None,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} s video [{elapsed}<{remaining}]",
    )

    def update(done: float, duration: float | None) -> None:
        if duration and bar.total != round(duration, 1):
            bar.total = round(duration, 1)
        bar.n = round(min(done, duration or done), 1)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _summary(outcomes: Sequence[FileOutcome]) -> dict[str, int]:
    stored = [o for o in outcomes if o.status == "stored"]
    return {
        "files": len(outcomes),
        "stored": len(stored),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "failed": sum(o.status in ("failed", "busy") for o in outcomes),
        "faces": sum(o.n_faces for o in stored),
        "crops": sum(o.crops_stored for o in stored),
        "features": sum(o.features_stored for o in stored),
    }


def default_workers(n_files: int, device: str) -> int:
    """Processes ``analyze`` uses without ``--workers``: one per core this process may use, at most one per file.

    Measured (bench/bench_workers.py, 2 cores, four 60 s videos and four stills): one process that spreads its
    threads over both cores gains only 1.13x over one core (decoding, detection glue and storing run one after the
    other), while two single-threaded processes gain 1.6x; so several files go to several processes. A GPU is shared
    by one process (1).
    """
    from models.runtime import cpu_workers

    if device != "cpu":
        return 1
    return max(1, min(cpu_workers(), n_files))


def outcome_line(study: str, o: FileOutcome) -> str:
    """The report line of a stored file: faces, how the run went, what it added and what it found stored."""
    resumed = "" if o.resumed_from_s is None else f"resumed after {o.resumed_from_s:.2f} s; "
    frames = "" if o.frames_analyzed is None else f"{o.frames_analyzed} frames analysed; "
    return (
        f"{o.file}: {o.n_faces} faces; {resumed}{frames}study {study!r}: media {int(o.new)} new, "
        f"{int(not o.new)} already stored; faces {o.faces_new} new, {o.faces_reused} reused; predictions "
        f"{o.predictions_new} new, {o.predictions_existing} already stored; {o.tracks} tracks, {o.crops_stored} "
        f"crops, {o.features_stored} features"
    )


def _report(args: argparse.Namespace, outcome: FileOutcome) -> None:
    """One file's lines: a failure on stderr, warnings on stderr, the result on stdout (not with ``--json``)."""
    if outcome.status in ("failed", "busy"):
        print_err(f"{outcome.file}: {outcome.error}")
        return
    for w in outcome.warnings:
        if not w.startswith("resumed a stopped analysis"):  # said on the result line
            print_err(f"warning: {outcome.file}: {w}")
    if args.json:
        return
    if outcome.status == "skipped":
        print(
            f"{outcome.file}: skipped, already stored in study {args.study!r} as media {outcome.media_id} "
            f"({outcome.n_faces} faces)",
            flush=True,
        )
    else:
        print(outcome_line(args.study, outcome), flush=True)


def _analyze_here(
    args: argparse.Namespace, settings: Settings, files: Sequence[Path], session: AnalysisSession, options: Options
) -> list[FileOutcome]:
    """The files analysed in this process, one by one; a file another run is analysing is waited for at the end."""
    from affectlab.analysis import AnalysisService, Source
    from db.services import LabelStore

    store = LabelStore.from_settings(settings)
    service = AnalysisService(store, args.study, lambda: session, options)
    outcomes: dict[int, FileOutcome] = {}
    try:
        for wait in (False, True):
            for i, path in enumerate(files):
                if i in outcomes and outcomes[i].status != "busy":
                    continue
                if wait:
                    print_err(f"{path}: being analysed by another run; waiting for it to end")
                with _progress_bar(path.name, enabled=not args.json and not args.no_progress) as progress:
                    outcome = service.analyze(Source.file(path), progress=progress, wait=wait)
                outcomes[i] = outcome
                if outcome.status != "busy" or wait:
                    _report(args, outcome)
    finally:
        store.close()
    return [outcomes[i] for i in range(len(files))]


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyses files and folders into a study: one report line per file, bad files on stderr, then a summary."""
    from db.engine import parse_url
    from models import runtime
    from models.analysis import AnalysisSession

    settings: Settings = args.settings
    runtime.tune_malloc(settings.malloc_tune)
    parse_url(settings.database_url)  # a DATABASE_URL that is no URL stops the run before any model loads
    files, notes = collect_files(args.inputs)
    for note in notes:
        print_err(f"warning: {note}")
    model = args.model or settings.model
    wdir = args.weights_dir
    device = args.device or settings.device
    backend = "torch" if args.exact else (args.backend or settings.backend)
    detect_every = 1 if args.exact else settings.detect_every
    options = Options(
        fps=args.fps,
        uploaded_by=args.uploaded_by,
        commit_every_s=args.commit_every,
        keep_file=True,
        gallery_preset=args.gallery_preset,
        min_face_size=args.min_face_size,
        stream=args.stream,
    )

    workers = args.workers if args.workers is not None else default_workers(len(files), device)
    if (workers > 1 and len(files) > 1) or args.ray:
        from affectlab.distribute import Job, analyze_many, job_env

        job = Job(
            study=args.study,
            model=model,
            weights_dir=str(wdir),
            device=device,
            backend=backend,
            detect_every=detect_every,
            options=options,
            env=job_env(),
        )
        outcomes = analyze_many(
            job,
            files,
            workers=(args.workers or 0) if args.ray else workers,
            ray_address=args.ray,
            on_outcome=lambda o: _report(args, o),
            progress=not args.no_progress,
        )
        model_name = model
    else:
        session = AnalysisSession.open(
            model=model,
            weights_dir=wdir,
            device=device,
            backend=backend,  # type: ignore[arg-type]
            detect_every=detect_every,
            workers=args.workers,  # one file: a long video is cut over the processes (default: one per core)
        )
        model_name = session.recognizer.name
        outcomes = _analyze_here(args, settings, files, session, options)
    summary = _summary(outcomes)
    if args.json:
        doc: dict[str, Any] = {
            "study": args.study,
            "model": model_name,
            "summary": summary,
            "files": [asdict(o) for o in outcomes],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(
            f"{summary['files']} files: {summary['stored']} stored ({summary['faces']} faces, {summary['crops']} "
            f"crops, {summary['features']} features), {summary['skipped']} skipped (already in study "
            f"{args.study!r}), {summary['failed']} failed"
        )
    return 1 if summary["failed"] else 0
