"""``python -m affectlab``: analyse media straight into the label store, fine-tune on its corrections.

Installed (``pip install -e .``), it is also the ``affectlab`` command. It composes ``models/`` (the inference core)
and ``db/`` (the label store); the two packages' own command lines, ``python -m models`` and ``python -m db``, each
stay within one of them.

Commands:
    analyze FILES_OR_DIRS --study S: detect faces, recognise emotions and store every face with its crop (unless
        ``AFFECTLAB_STORE_CROPS=0``), backbone features and prediction, through the analysis service the web app
        uses too (:mod:`affectlab.analysis`); folders are walked for image and video files; files already stored in
        the study (same bytes) are skipped without running the model.
        ``--gallery-preset auto|webcam|gallery`` and ``--min-face-size PX`` set the face detection (stored with each
        recording, :mod:`affectlab.detection`). Videos are stored every ``--commit-every``
        seconds of video; a stopped run leaves the video ``partial`` and the next run of the same file resumes after
        its last stored frame. A file another run is analysing (another ``affectlab analyze``, a worker, the web
        app) is waited for at the end, then resumed if that run died or reported as stored; copies of one file in a
        batch are analysed once. A file that changes while it is read is left ``partial`` (exit 1). A progress bar
        (seconds of video, time left) goes to stderr when it is a terminal.
    finetune --study S: train a new head on the study's corrections and report it against the original.
    figure --study S --recording ID --out DIR: the class figures of a recording as PNG and SVG files
        (:mod:`affectlab.class_figures`; ``--kind`` and ``--format`` choose).

The database comes from ``DATABASE_URL`` (default: SQLite in ``AFFECTLAB_DATA_DIR``), the weights from
``AFFECTLAB_WEIGHTS_DIR`` (see :mod:`core.settings`).

Exit codes: 0 success; 1 some input file failed (the others were stored), or too few corrections to fine-tune;
2 a setup problem (unknown model, missing weights, database not migrated, bad arguments), alike with or without
``--workers``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlab.analysis import FileOutcome, Options, setup_message
from core.settings import BACKENDS, Settings

if TYPE_CHECKING:
    from models.analysis import AnalysisSession


def _print_err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- analyze


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
        _print_err(f"{outcome.file}: {outcome.error}")
        return
    for w in outcome.warnings:
        if not w.startswith("resumed a stopped analysis"):  # said on the result line
            _print_err(f"warning: {outcome.file}: {w}")
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
                    _print_err(f"{path}: being analysed by another run; waiting for it to end")
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
    from models import runtime, weights
    from models.analysis import AnalysisSession

    runtime.tune_malloc()
    settings = Settings.from_env()
    parse_url(settings.database_url)  # a DATABASE_URL that is no URL stops the run before any model loads
    files, notes = collect_files(args.inputs)
    for note in notes:
        _print_err(f"warning: {note}")
    model = args.model or settings.model
    wdir = weights.resolve_weights_dir(args.weights_dir)
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


# ---------------------------------------------------------------------------------------------------- finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tunes a head on a study's corrections; prints the before/after report."""
    from db.services import LabelStore
    from db.training import finetune_study
    from models import weights
    from models.recognizer import EmotionRecognizer

    settings = Settings.from_env()
    wdir = weights.resolve_weights_dir(args.weights_dir)
    recognizer = EmotionRecognizer.load(args.model or settings.model, wdir, device=args.device or settings.device)
    store = LabelStore.from_settings(settings)
    try:
        outcome = finetune_study(store, args.study, recognizer, args.target, wdir, save=not args.no_save)
    finally:
        store.close()
    report = outcome.report
    if args.json:
        print(
            json.dumps(
                {
                    "report": report.to_json(),
                    "notes": list(outcome.notes),
                    "version": outcome.version.name if outcome.version else None,
                },
                indent=2,
                default=float,
            )
        )
    else:
        print(report_text(report))
        for note in outcome.notes:
            print(f"note: {note}")
        if outcome.version is not None:
            print(f"saved as version {outcome.version.name} (use --model {outcome.version.name})")
    return 0 if report.enough else 1


def report_text(report: Any) -> str:
    """The before/after table of a :class:`models.finetune.FineTuneReport`."""
    lines = [
        f"target: {report.target}; corrected faces: {report.n_faces} in {report.n_groups} groups; "
        f"folds: {report.n_folds}"
    ]
    if not report.enough:
        return "\n".join([*lines, report.message])
    lines.append(f"{'metric':14} {'original':>9} {'fine-tuned':>10}")
    for key, before in report.before.items():
        if isinstance(before, float | int):
            lines.append(f"{key:14} {before:9.3f} {float(report.after[key]):10.3f}")
    if "confusion" in report.before:
        short = [c[:5] for c in report.classes]
        for title, cm in (("original", report.before["confusion"]), ("fine-tuned", report.after["confusion"])):
            lines.append(f"confusion ({title}; rows = human label):")
            lines.append("       " + " ".join(f"{c:>5}" for c in short))
            lines += [f"{short[i]:>6} " + " ".join(f"{v:5d}" for v in row) for i, row in enumerate(cm)]
    lines.append(report.message)
    return "\n".join(lines)


def cmd_figure(args: argparse.Namespace) -> int:
    """Writes the class figures of one recording as PNG and SVG files; prints their paths."""
    from affectlab import class_figures
    from db.services import LabelStore

    store = LabelStore.from_settings(Settings.from_env())
    try:
        tables = store.classroom.class_tables(args.study)
    finally:
        store.close()
    kinds = args.kind or class_figures.KINDS
    formats = args.format or class_figures.FORMATS
    for path in class_figures.figure_files(tables, args.recording, Path(args.out), kinds, formats):
        print(path)
    return 0


# ---------------------------------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of pixels")
    return value


def _rate(text: str) -> float:
    """``--fps``: a finite rate from 0 (every frame) to 1000 frames per second."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1000:  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"{text} is not a rate from 0 (every frame) to 1000 frames per second")
    return value


def _seconds(text: str) -> float:
    """``--commit-every``: finite seconds, more than 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0 and at most 86400")
    return value


def _index(text: str) -> int:
    """``--stream``: a video stream's number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream number (0, 1, ...)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a stream number (0, 1, ...)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m affectlab`` argument parser."""
    parser = argparse.ArgumentParser(prog="affectlab", description=__doc__.splitlines()[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--study", required=True)
        p.add_argument("--model", default=None, help="emotion model (default: $AFFECTLAB_MODEL or the default model)")
        p.add_argument("--weights-dir", help="weights folder (default: $AFFECTLAB_WEIGHTS_DIR or the user cache)")
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: $AFFECTLAB_DEVICE or cpu)")

    p = sub.add_parser("analyze", help="analyse images and videos and store every face in a study")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    common(p)
    p.add_argument("--backend", choices=BACKENDS, default=None, help="default: $AFFECTLAB_BACKEND or onnx")
    p.add_argument(
        "--exact", action="store_true", help="the reference path: torch backend, detection on every sampled frame"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="analyse with N processes on this machine (default: one per core, at most one per file, 1 on a GPU; "
        "one file: a long video cut into N time ranges; with --ray: N actors, 0 or unset = one per cluster CPU)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="fan the files out over a Ray cluster (`local` starts one here); needs `pip install ray`",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--fps", type=_rate, default=5.0, help="video sampling rate; 0 = every frame")
    p.add_argument(
        "--stream",
        type=_index,
        default=0,
        metavar="N",
        help="the video stream to analyse in files with several (default 0; the others are named in a warning)",
    )
    p.add_argument("--uploaded-by", default=None, help="who ran the analysis (stored with each media item)")
    p.add_argument("--json", action="store_true", help="print one JSON document (per-file outcomes, summary)")
    p.add_argument(
        "--commit-every",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="store a video's faces every this many seconds of video; a stopped run resumes from the "
        "last stored stretch (default: 30)",
    )
    p.add_argument(
        "--gallery-preset",
        choices=("auto", "webcam", "gallery"),
        default=None,
        help="face detection preset: webcam (one large face; the default), gallery (a grid of small tiles: full "
        "frames, minimum face from the frame size), auto (chosen per file from the frame size and the faces found "
        "in the first minute); stored with each recording",
    )
    p.add_argument(
        "--min-face-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="smallest face side in pixels looked for (overrides the preset's; webcam 40, gallery 5x5 at 720p 24)",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("finetune", help="fine-tune a head on a study's corrections (before/after report)")
    common(p)
    p.add_argument("--target", choices=("emotion", "va", "engagement"), default="emotion")
    p.add_argument("--no-save", action="store_true", help="report only; save no version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("figure", help="a recording's class figures as PNG and SVG files (for a paper)")
    p.add_argument("--study", required=True)
    p.add_argument("--recording", type=int, required=True, metavar="MEDIA_ID", help="the recording's media id")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the files (made if missing)")
    p.add_argument(
        "--kind",
        action="append",
        choices=("segment-bars", "participant-lines", "class-mean"),
        help="which figures (repeatable; default: all three)",
    )
    p.add_argument("--format", action="append", choices=("png", "svg"), help="repeatable; default: both")
    p.set_defaults(func=cmd_figure)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit code."""
    from models.errors import AffectLabError

    for stream in (sys.stdout, sys.stderr):  # a file name with bytes the terminal cannot show never stops a run
        with suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AffectLabError as exc:
        _print_err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130
    except Exception as exc:
        message = setup_message(exc, Settings.from_env().database_url)
        if message is None:
            raise
        _print_err(f"error: {message}")
        return 2
