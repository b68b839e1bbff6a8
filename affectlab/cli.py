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
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from affectlab.analysis import setup_message
from affectlab.cli_analyze import cmd_analyze, print_err
from affectlab.cli_analyze import collect_files as collect_files
from affectlab.cli_analyze import default_workers as default_workers
from affectlab.cli_analyze import media_suffixes as media_suffixes
from affectlab.cli_analyze import outcome_line as outcome_line
from core.settings import BACKENDS, Settings
from models.cli import settle

# ---------------------------------------------------------------------------------------------------- finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tunes a head on a study's corrections; prints the before/after report."""
    from db.services import LabelStore
    from db.training import finetune_study
    from models.recognizer import EmotionRecognizer

    settings: Settings = args.settings
    wdir = args.weights_dir
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

    store = LabelStore.from_settings(args.settings)
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


N = TypeVar("N", int, float)


def _number(
    cast: Callable[[str], N], ok: Callable[[N], bool], not_a_number: str, out_of_range: str
) -> Callable[[str], N]:
    """An argparse ``type``: the text cast to a number, refused with a message unless ``ok`` holds for it.

    The messages are format strings of ``text`` (the argument as given): ``not_a_number`` when it does not parse,
    ``out_of_range`` when ``ok`` refuses it.
    """

    def parse(text: str) -> N:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(not_a_number.format(text=text)) from None
        if not ok(value):
            raise argparse.ArgumentTypeError(out_of_range.format(text=text))
        return value

    return parse


_positive_int = _number(
    int, lambda v: v >= 1, "{text!r} is not a positive number of pixels", "{text!r} is not a positive number of pixels"
)
"""``--min-face-size``: pixels, 1 or more."""
_rate = _number(
    float,
    lambda v: 0 <= v <= 1000,  # also refuses inf and nan
    "{text!r} is not a number",
    "{text} is not a rate from 0 (every frame) to 1000 frames per second",
)
"""``--fps``: a finite rate from 0 (every frame) to 1000 frames per second."""
_seconds = _number(
    float,
    lambda v: 0 < v <= 86400,
    "{text!r} is not a number of seconds",
    "{text} is not a number of seconds above 0 and at most 86400",
)
"""``--commit-every``: finite seconds, more than 0 and at most a day."""
_index = _number(
    int, lambda v: v >= 0, "{text!r} is not a stream number (0, 1, ...)", "{text} is not a stream number (0, 1, ...)"
)
"""``--stream``: a video stream's number, 0 or more."""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m affectlab`` argument parser."""
    parser = argparse.ArgumentParser(prog="affectlab", description=__doc__.splitlines()[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_analyze(sub.add_parser("analyze", help="analyse images and videos and store every face in a study"))

    p = sub.add_parser("finetune", help="fine-tune a head on a study's corrections (before/after report)")
    _common(p)
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


def _common(p: argparse.ArgumentParser) -> None:
    """The options ``analyze`` and ``finetune`` share: the study, the model, its weights and the device."""
    p.add_argument("--study", required=True)
    p.add_argument("--model", default=None, help="emotion model (default: $AFFECTLAB_MODEL or the default model)")
    p.add_argument("--weights-dir", help="weights folder (default: $AFFECTLAB_WEIGHTS_DIR or the user cache)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: $AFFECTLAB_DEVICE or cpu)")


def _add_analyze(p: argparse.ArgumentParser) -> None:
    """The arguments of ``analyze``."""
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    _common(p)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit code."""
    from models.errors import AffectLabError

    for stream in (sys.stdout, sys.stderr):  # a file name with bytes the terminal cannot show never stops a run
        with suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    args = build_parser().parse_args(argv)
    settings = settle(args, print_err)  # the one read of the environment; the commands get ``args.settings``
    if settings is None:
        return 2
    try:
        return int(args.func(args))
    except AffectLabError as exc:
        print_err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        print_err("interrupted")
        return 130
    except Exception as exc:
        message = setup_message(exc, settings.database_url)
        if message is None:
            raise
        print_err(f"error: {message}")
        return 2
