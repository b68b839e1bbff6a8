"""``python -m db``: the label store's command line, for batch work and scripts.

Commands: ``upgrade``, ``ingest``, ``import-labels``, ``import-segments``, ``import-recordings``, ``stats``,
``export``, ``study-tables`` (see :mod:`db.stat_files`), ``backup``, ``delete-media``, ``delete-track``, ``studies``,
``compact`` (see :mod:`db.compact`), ``video-crops``, ``roster`` and ``persons`` (:mod:`db.roster_cli`). All take
the database from ``DATABASE_URL`` (default: SQLite in the
data folder, ``AFFECTLAB_DATA_DIR``). ``ingest`` computes each face's backbone features with the model the JSON names,
from the weights folder (``AFFECTLAB_WEIGHTS_DIR``). Exit status: 0 on success, 1 on an error (one line on stderr
naming the file or object and the reason), 2 on a usage error or missing weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from core.settings import Settings
from core.text import plural
from db.engine import explain_error, safe_url
from db.errors import FeatureModelMissingError
from db.rows import IngestReport
from db.services import LabelStore
from models.errors import AffectLabError


def _store(settings: Settings) -> LabelStore:
    return LabelStore.from_settings(settings)


def _cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    rev = store.upgrade()
    print(f"database {safe_url(settings.database_url)} is at schema revision {rev}")
    return 0


def ingest_line(report: IngestReport) -> str:
    """The one-line summary of an ingest report (``db ingest``, ``affectlab analyze``)."""
    return (
        f"study {report.study!r}: media {report.media_new} new, {report.media_existing} already stored; faces "
        f"{report.faces_new} new, {report.faces_reused} reused; predictions {report.predictions_new} new, "
        f"{report.predictions_existing} already stored; {report.tracks_new} tracks, {report.crops_stored} crops, "
        f"{report.features_stored} features"
    )


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from db.analysis_file import RecognizerFeatures
    from db.errors import AnalysisFormatError

    path = Path(args.analysis)
    try:
        analysis = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnalysisFormatError(str(path), "file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnalysisFormatError(str(path), f"not a JSON file ({e})") from None
    dirs = [Path(d) for d in args.media_dir] + [path.parent]
    features = None
    if not args.no_features:
        wdir = Path(args.weights_dir).expanduser() if args.weights_dir else settings.weights_dir
        features = RecognizerFeatures(
            wdir,
            device=settings.device,  # Settings admits only these two backends
            backend="torch" if settings.backend == "torch" else "onnx",
        )
    report = _store(settings).ingest.ingest_analysis(
        args.study, analysis, media_dirs=dirs, source_name=str(path), uploaded_by=args.uploaded_by, features=features
    )
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(ingest_line(report))
    return 0


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    report = _store(settings).review.import_labels(args.study, Path(args.file), args.annotator)
    print(
        f"{report.file}: {report.rows} rows, {report.annotations_added} votes added for {args.annotator!r}; "
        f"recorded nothing: {report.unedited} values unedited since the export, {report.already_current} equal to "
        "the annotator's current values"
    )
    return 0


IMPORT_HELP = """\
Records ANNOTATOR's votes from a CSV file (UTF-8, header on line 1). Two kinds of file:

labels file   face_id plus any of: label, valence, arousal, engagement, note (no other column).
              Every filled cell is a vote, also where it agrees with another annotator or the model.
edited export a CSV from `python -m db export --format csv`. Edit only label, valence, arousal,
              engagement, note; the read-only columns exported_label, exported_valence,
              exported_arousal, exported_engagement, exported_note record what the export held, and
              a cell is a vote only where it differs from them: an unedited export adds nothing, one
              edited label adds one vote. The other export columns (label_source, human_label,
              model_label, prob_*, ...) are ignored. An emptied cell is refused (use undo instead).

In both, a value equal to ANNOTATOR's own current value adds nothing, so importing a file again
adds nothing. Values: label one of the study's classes (case ignored); valence and arousal decimal
numbers in [-1, 1]; engagement 0, 0.33, 0.66 or 1; note at most 500 characters; an empty cell
means no value.

The whole file is refused, naming the line and writing nothing, for: an unknown or duplicate
column, a row with more or fewer fields than the header, a face_id that is not plain digits or
not a face of the study, the SAME FACE ON TWO ROWS (both lines are named: keep one row per face),
an unknown class, nan/inf or any non-decimal number, a value out of range, a note too long.
"""


SEGMENTS_HELP = """\
Adds lecture segments from a CSV file (UTF-8, header on line 1): media,name,start_s,end_s

media     the recording: its media id, its file name as uploaded, or its sha256
name      the segment's name (unique within the recording)
start_s   start in seconds from the recording's start (decimal number, 0 or more)
end_s     end in seconds (after start_s, not after the recording's end)

Segments of one recording must not overlap each other or one already stored. The whole file is
refused, naming every bad line and writing nothing, for an unknown or missing column, unknown
media, a bad number, times out of range and overlaps.
"""


def _cmd_import_segments(args: argparse.Namespace, settings: Settings) -> int:
    rows = _store(settings).classroom.import_segments(args.study, Path(args.file), created_by=args.created_by)
    print(f"{args.file}: {len(rows)} segments added to {len({r.media_id for r in rows})} recordings")
    return 0


def _cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from db.quality import format_stats

    stats = _store(settings).exports.stats(args.study, model=args.model)
    if args.json:
        print(json.dumps(asdict(stats), indent=2, ensure_ascii=False))
    else:
        print(format_stats(stats))
    return 0


class _Progress:
    """``exported N / TOTAL faces`` on stderr, at most every 10 % of the study (and at the end)."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = max(1, total // 10)
        if done // step != self.shown // step or done >= total:
            self.shown = done
            print(f"exported {done} / {total} faces", file=sys.stderr, flush=True)


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    report = _store(settings).exports.export(
        args.study, args.format, Path(args.out), model=args.model, seed=args.seed, progress=_Progress()
    )
    splits = ", ".join(f"{k} {v}" for k, v in report.splits.items())
    print(
        f"wrote {report.path} ({report.format}): {plural(report.n_faces, 'face')}, {report.n_human} with human labels, "
        f"{report.n_model_only} with model labels only" + (f"; splits {splits}" if splits else "")
    )
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _cmd_study_tables(args: argparse.Namespace, settings: Settings) -> int:
    paths = _store(settings).exports.export_study_tables(args.study, args.format, Path(args.out))
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    return 0


def _cmd_import_recordings(args: argparse.Namespace, settings: Settings) -> int:
    rows = _store(settings).classroom.import_recording_info(args.study, Path(args.file))
    print(f"{args.file}: course, name or date set for {plural(len(rows), 'recording')}")
    return 0


def _cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    report = _store(settings).upkeep.compact(
        args.study,
        crops=not args.no_crops,
        drop_features=args.drop_features,
        vacuum=args.vacuum,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(
        f"study {report.study!r}: {report.features_converted} features converted, {report.crops_dropped} video crops "
        f"dropped (re-cut pixel-equal from the recording), {report.crops_kept} kept, "
        f"{report.features_dropped} features dropped"
    )
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _cmd_video_crops(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.mode is not None:
        store.upkeep.set_keep_video_crops(args.study, args.mode == "keep")
    keep = store.upkeep.keep_video_crops(args.study)
    print(
        f"study {args.study!r}: "
        + ("every video crop is stored" if keep else "video crops are re-cut from the kept recordings")
    )
    return 0


def _cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    out = _store(settings).upkeep.backup(Path(args.out) if args.out else None)
    print(f"backup written to {out} (integrity check ok)")
    return 0


def _cmd_vacuum(args: argparse.Namespace, settings: Settings) -> int:
    shrunk = _store(settings).upkeep.vacuum()
    print(f"vacuumed: the database file shrank by {shrunk / 2**20:.1f} MB")
    return 0


def _cmd_delete_media(args: argparse.Namespace, settings: Settings) -> int:
    counts = _store(settings).upkeep.delete_media(args.media_id)
    print(
        f"deleted media {args.media_id}: {plural(counts['faces'], 'face')}, "
        f"{plural(counts['face_annotations'], 'face annotation')}, {plural(counts.get('files', 0), 'kept file')}"
    )
    return 0


def _cmd_delete_track(args: argparse.Namespace, settings: Settings) -> int:
    counts = _store(settings).upkeep.delete_track(args.track_id)
    print(
        f"deleted track {args.track_id}: {plural(counts['faces'], 'face')}, "
        f"{plural(counts['face_annotations'], 'face annotation')}"
    )
    return 0


def _cmd_studies(args: argparse.Namespace, settings: Settings) -> int:
    for s in _store(settings).recordings.studies():
        print(f"{s.name}\t{s.n_media} media\t{plural(s.n_faces, 'face')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m db``."""
    p = argparse.ArgumentParser(
        prog="python -m db",
        description="AffectLab's label store. The database comes from DATABASE_URL (default: SQLite in "
        "AFFECTLAB_DATA_DIR, ./data).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("upgrade", help="create or migrate the database schema").set_defaults(fn=_cmd_upgrade)

    _add_ingest_commands(sub)
    _add_study_commands(sub)
    _add_maintenance_commands(sub)
    from db.roster_cli import add_commands

    add_commands(sub)
    return p


def _add_ingest_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ingest``, ``import-labels`` and ``import-segments``."""
    q = sub.add_parser("ingest", help="store the JSON of `python -m models analyze --json`")
    q.add_argument("analysis", metavar="ANALYSIS.json")
    q.add_argument("--study", required=True)
    q.add_argument(
        "--media-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="folder holding the files the JSON names (repeatable; the JSON's folder is also searched)",
    )
    q.add_argument("--uploaded-by", default=None)
    q.add_argument(
        "--weights-dir",
        default=None,
        help="weights folder of the model the JSON names, for the faces' features (default: $AFFECTLAB_WEIGHTS_DIR "
        "or the user cache)",
    )
    q.add_argument(
        "--no-features",
        action="store_true",
        help="store no backbone features (fine-tuning and the features export then leave these faces out)",
    )
    q.set_defaults(fn=_cmd_ingest)

    q = sub.add_parser(
        "import-labels",
        help="record an annotator's votes from a labels CSV or an edited CSV export",
        description=IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("file", metavar="FILE.csv")
    q.add_argument("--study", required=True)
    q.add_argument("--annotator", required=True, help="whose votes these are")
    q.set_defaults(fn=_cmd_import)

    q = sub.add_parser(
        "import-segments",
        help="add lecture segments (media,name,start_s,end_s) from a CSV file, all or nothing",
        description=SEGMENTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("file", metavar="FILE.csv")
    q.add_argument("--study", required=True)
    q.add_argument("--created-by", default=None)
    q.set_defaults(fn=_cmd_import_segments)


def _add_study_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``stats``, ``export``, ``study-tables`` and ``import-recordings``."""
    from db.exports import FORMATS

    q = sub.add_parser("stats", help="counts and agreement of a study")
    q.add_argument("--study", required=True)
    q.add_argument("--model", default=None, help="follow this model's predictions (default: the most used)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=_cmd_stats)

    q = sub.add_parser("export", help="export a study for training")
    q.add_argument("--study", required=True)
    q.add_argument("--format", required=True, choices=FORMATS)
    q.add_argument(
        "--out",
        required=True,
        help="file (csv, parquet, imagefolder zip, features npz) or folder (hf); class-* tables: .csv, or .parquet",
    )
    q.add_argument("--model", default=None)
    q.add_argument("--seed", type=int, default=0, help="seed of the train/validation/test assignment")
    q.set_defaults(fn=_cmd_export)

    q = sub.add_parser(
        "study-tables",
        help="write the study tables (per participant per recording, per segment type, wide) and their codebook",
    )
    q.add_argument("--study", required=True)
    q.add_argument("--format", required=True, choices=("csv", "parquet", "sav", "dta"), help="sav: SPSS, dta: Stata")
    q.add_argument("--out", required=True, help="a new or empty folder")
    q.set_defaults(fn=_cmd_study_tables)

    q = sub.add_parser(
        "import-recordings",
        help="set recordings' course, name and date from a CSV (media plus any of course,recording,date), all or "
        "nothing",
    )
    q.add_argument("file", metavar="FILE.csv")
    q.add_argument("--study", required=True)
    q.set_defaults(fn=_cmd_import_recordings)


def _add_maintenance_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``backup``, ``vacuum``, ``delete-media``, ``delete-track``, ``studies``, ``compact`` and ``video-crops``."""
    q = sub.add_parser("backup", help="copy the SQLite database with the online backup API")
    q.add_argument("--out", default=None, help="backup file (default: DATA_DIR/backups/affectlab-STAMP.sqlite3)")
    q.set_defaults(fn=_cmd_backup)

    q = sub.add_parser("vacuum", help="rebuild the SQLite file without free pages (after deleting media or a study)")
    q.set_defaults(fn=_cmd_vacuum)

    q = sub.add_parser("delete-media", help="delete a media item and everything derived from it")
    q.add_argument("media_id", type=int)
    q.set_defaults(fn=_cmd_delete_media)

    q = sub.add_parser("delete-track", help="delete a person track with its faces")
    q.add_argument("track_id", type=int)
    q.set_defaults(fn=_cmd_delete_track)

    sub.add_parser("studies", help="list the studies").set_defaults(fn=_cmd_studies)

    q = sub.add_parser(
        "compact",
        help="store a study compactly: features as uint8, video crops re-cut from the kept recordings",
    )
    q.add_argument("--study", required=True)
    q.add_argument("--no-crops", action="store_true", help="leave stored video crops as they are")
    q.add_argument(
        "--drop-features",
        action="store_true",
        help="also drop the features of completely analysed videos (engagement and tables are computed already; "
        "fine-tuning re-extracts them from the re-cut crops)",
    )
    q.add_argument("--vacuum", action="store_true", help="give the freed space back (SQLite VACUUM)")
    q.set_defaults(fn=_cmd_compact)

    q = sub.add_parser("video-crops", help="show or set whether a study stores every video crop")
    q.add_argument("--study", required=True)
    q.add_argument("mode", nargs="?", choices=["keep", "recut"], default=None)
    q.set_defaults(fn=_cmd_video_crops)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        return int(args.fn(args, settings))
    except FeatureModelMissingError as e:  # a setup problem: fetch the weights (or --no-features)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AffectLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}".replace(": : ", ": "), file=sys.stderr)
        return 1
    except Exception as e:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(e, SQLAlchemyError):
            print(f"error: {explain_error(e, settings.database_url)}", file=sys.stderr)
            return 1
        raise
