"""Turning a labels CSV into one annotator's votes: this module's one job.

Two kinds of file are read (``python -m db import-labels``):

- a **labels file**: ``face_id`` plus any of ``label, valence, arousal, engagement, note``, no other column. Every
  filled cell is the importing annotator's vote;
- an **edited export** (``python -m db export --format csv``): it has ``exported_*`` columns, the read-only record of
  what the export held (``exported_label, exported_valence, exported_arousal, exported_engagement, exported_note``).
  A cell of an editable column (``label, valence, arousal, engagement, note``) is a vote only where it differs from
  its ``exported_*`` partner, so an unedited export adds nothing and one edited label adds exactly one vote. Every
  other export column (``label_source``, ``model_label``, ``prob_*``...) is read-only and ignored.

In both, a value equal to the annotator's own current value on the face (:mod:`db.labels` rules: their latest
active row, else their track-level row; never the consensus or the model) is already recorded and adds nothing, so
importing a file twice adds nothing the second time. A vote agreeing with another annotator or with the model is
recorded: votes are independent.

The whole file is refused, with the line number and nothing written (:class:`db.errors.ImportLabelsError`), for: a
header without ``face_id``, an unknown or duplicate column, an export column in a file without ``exported_*``
columns (an export from before they existed: export again), an editable column without its ``exported_*`` partner
in an edited export, a row with more or fewer fields than the header, a face id that is not plain digits or not a
face of the study, the same face on two rows (both line numbers are named), a class that is not one of the study's,
a number that is not a finite decimal, a value out of range, a note over :data:`MAX_NOTE` characters, and, in an
edited export, a cell emptied (an import cannot withdraw a vote: use undo) or an ``exported_*`` cell that is not a
value. Blank lines are skipped. A note's leading apostrophe before ``= + - @``, a tab or a carriage return is the
export's formula neutralisation (:func:`db.exports.neutralise_cell`) and is removed, so an exported note re-imports
unchanged.

Steps: :func:`read_file` (syntax, no database), :func:`load_context` (one read of the study and of the annotator's
history), :func:`plan_votes` (every value rule, no database), :func:`write_votes` (one short write transaction: a
bulk insert). Only the last writes; it refuses a context that changed since it was read (:class:`StaleContextError`),
and :func:`import_labels`, which runs the steps in the store's transactions, then reads and plans again.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from db import class_sums, labels, repo, status
from db.errors import ImportLabelsError, InvalidLabelError, StoreBusyError, StoreError
from db.exports import EXPORTED_PREFIX, unneutralise_cell
from db.label_file import (
    EDITABLE,
    MAX_NOTE,
    NUMBER_TOLERANCE,
    LabelsFile,
    parse_number,
    read_file,
)
from db.rows import ImportReport
from db.schema import Annotation, Annotator, Face, Media, Track, utcnow

T = TypeVar("T")


class Transaction(Protocol):
    """Runs ``fn(session)`` in one transaction (:meth:`db.services.LabelStore.transaction`)."""

    def __call__(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """``fn(session)``'s result, committed (``write``) or read in a read-only transaction."""
        ...


class StaleContextError(Exception):
    """The study's faces or the annotator's history changed between :func:`load_context` and :func:`write_votes`."""


@dataclass(frozen=True)
class Context:
    """What :func:`plan_votes` needs from the database, read in one read-only transaction.

    Attributes:
        study: The study's name.
        annotator: The importing annotator's name.
        track_of: Track id (or None) of every face of the study.
        allowed: The classes a vote may use (:func:`db.labels.allowed_labels`).
        resolved: The annotator's current values per face and track (:func:`db.labels.resolve`).
        stamp: Fingerprint of the faces and of the annotator's history, checked again by :func:`write_votes`.
    """

    study: str
    annotator: str
    track_of: dict[int, int | None]
    allowed: tuple[str, ...]
    resolved: labels.Resolved
    stamp: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """The votes a file adds, after every check.

    Attributes:
        votes: One dict per annotation row: ``face_id`` and every field of :data:`EDITABLE` (None: not voted).
        rows: Data rows in the file.
        unedited: Cells of an edited export equal to the exported value (no vote).
        already_current: Cells equal to the annotator's own current value (no vote).
    """

    votes: list[dict[str, Any]]
    rows: int
    unedited: int
    already_current: int


# ---------------------------------------------------------------------------------------------------- the import


def import_labels(transaction: Transaction, study: str, path: Path, annotator: str, *, attempts: int) -> ImportReport:
    """Imports ``annotator``'s votes from a labels CSV or an edited CSV export (the rules of the module docstring).

    The file is read and every row checked before the write transaction opens; that transaction only inserts the
    votes in bulk. When the study or the annotator's labels changed between the read and the write, the file is
    planned again, up to ``attempts`` times.

    Args:
        transaction: Runs a function of a session in one transaction (the store's).
        study: The study.
        path: The CSV file.
        annotator: Whose votes these are.
        attempts: Plans at most this many times.

    Raises:
        StoreError: For an empty annotator name.
        ImportLabelsError: For a bad file or row (with its line number); nothing of the file is applied.
        StudyNotFoundError: For an unknown study.
        StoreBusyError: When the context changed during every attempt.
    """
    who = (annotator or "").strip()
    if not who:
        raise StoreError("give the annotator's name (--annotator NAME) to import labels")
    file = read_file(Path(path))
    source = f"import:{file.name}"
    for attempt in range(1, attempts + 1):
        ctx = transaction(functools.partial(load_context, study=study, annotator=who), write=False)
        plan = plan_votes(file, ctx)
        started = time.perf_counter()
        try:
            added = transaction(functools.partial(write_votes, plan=plan, ctx=ctx, source=source))
        except StaleContextError as e:
            if attempt == attempts:
                raise StoreBusyError(attempt, str(e)) from e
            continue
        return ImportReport(
            file=file.name,
            rows=plan.rows,
            annotations_added=added,
            fields_unchanged=plan.unedited + plan.already_current,
            unedited=plan.unedited,
            already_current=plan.already_current,
            write_seconds=time.perf_counter() - started,
        )
    raise StoreError(f"give at least one attempt to import labels, not {attempts}")


# ---------------------------------------------------------------------------------------------------- context


def load_context(session: Session, study: str, annotator: str) -> Context:
    """Reads the study's faces, its classes and the annotator's history (for the no-op rule).

    Raises:
        StudyNotFoundError: For an unknown study.
    """
    st = repo.get_study(session, study)
    face_rows = session.execute(
        select(Face.id, Face.track_id).join(Media, Face.media_id == Media.id).where(Media.study_id == st.id)
    ).all()
    track_of = {fid: tid for fid, tid in face_rows}
    allowed = tuple(labels.allowed_labels(session, study_id=st.id))
    who = session.scalar(select(Annotator.id).where(Annotator.key == repo.annotator_key(annotator)))
    resolved: labels.Resolved = {}
    if who is not None:
        study_faces = select(Face.id).join(Media, Face.media_id == Media.id).where(Media.study_id == st.id)
        study_tracks = select(Track.id).join(Media, Track.media_id == Media.id).where(Media.study_id == st.id)
        cols = (Annotation.id, Annotation.face_id, Annotation.track_id, Annotation.kind, Annotation.reverts_id)
        rows = session.execute(
            select(*cols, *(getattr(Annotation, f) for f in EDITABLE)).where(
                Annotation.annotator_id == who,
                or_(Annotation.face_id.in_(study_faces), Annotation.track_id.in_(study_tracks)),
            )
        ).all()
        resolved = labels.resolve((r, annotator) for r in rows)
    return Context(study, annotator, track_of, allowed, resolved, _stamp(session, st.id, who))


def _stamp(session: Session, study_id: int, annotator_id: int | None) -> tuple[int, ...]:
    n, top = session.execute(
        select(func.count(Face.id), func.max(Face.id))
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
    ).one()
    last = 0
    if annotator_id is not None:
        last = session.scalar(select(func.max(Annotation.id)).where(Annotation.annotator_id == annotator_id)) or 0
    return (int(n or 0), int(top or 0), int(last))


# ---------------------------------------------------------------------------------------------------- the vote rules


def plan_votes(file: LabelsFile, ctx: Context) -> Plan:
    """Checks every value and applies the vote rules of the module docstring.

    Raises:
        ImportLabelsError: For a face outside the study or a bad value, with its line.
    """
    by_key = {a.casefold(): a for a in ctx.allowed}
    votes: list[dict[str, Any]] = []
    unedited = already = 0
    faces_with_history = {t[1] for t in ctx.resolved if t[0] == "face"}
    tracks_with_history = {t[1] for t in ctx.resolved if t[0] == "track"}
    for n, fid in enumerate(file.face_ids):
        line = file.lines[n]
        if fid not in ctx.track_of:
            raise ImportLabelsError(file.name, f"face {fid} is not in study {ctx.study!r}", line)
        tid = ctx.track_of[fid]
        mine: dict[str, Any] = {}
        if fid in faces_with_history or tid in tracks_with_history:
            judged = labels.judgements_for_face(ctx.resolved, fid, tid)
            if judged:
                j = judged[0][0]
                mine = {f: getattr(j, f) for f in EDITABLE if getattr(j, f) is not None}
        vote: dict[str, Any] = {}
        cells = file.cells[n]
        for k, col in enumerate(file.fields):
            text = cells[k]
            try:
                if file.edited_export:
                    exported = file.exported[n][k]
                    if not text and not exported:
                        continue
                    if _unedited(col, text, exported, by_key, file.name, line):
                        unedited += 1
                        continue
                    if not text:
                        raise ImportLabelsError(
                            file.name,
                            f"{col} was emptied (exported {exported!r}); an import cannot withdraw a vote: put the "
                            "value back, and undo the vote in the web app",
                            line,
                        )
                value = parse_value(col, text, by_key)
            except InvalidLabelError as e:
                raise ImportLabelsError(file.name, str(e), line) from None
            if value is None:
                continue
            if col in mine and _same(value, mine[col]):
                already += 1
                continue
            vote[col] = value
        if vote:
            votes.append({"face_id": fid, **{f: vote.get(f) for f in EDITABLE}})
    return Plan(votes=votes, rows=len(file.face_ids), unedited=unedited, already_current=already)


def parse_value(column: str, text: str, by_key: dict[str, str]) -> Any:
    """One editable cell as a validated value (None for an empty cell).

    Args:
        column: One of :data:`EDITABLE`.
        text: The stripped cell.
        by_key: The allowed classes by their case-folded name.

    Raises:
        InvalidLabelError: For an unknown class, a non-finite or out-of-range number, or a note over
            :data:`MAX_NOTE` characters.
    """
    if not text:
        return None
    if column == "label":
        canonical = by_key.get(text.casefold())
        if canonical is None:
            raise InvalidLabelError("label", text, "use one of " + ", ".join(by_key.values()))
        return canonical
    if column == "note":
        text = unneutralise_cell(text)
        if len(text) > MAX_NOTE:
            raise InvalidLabelError("note", text[:40] + "...", f"at most {MAX_NOTE} characters, this has {len(text)}")
        return text
    x = parse_number(column, text)
    if column == "engagement":
        return labels.normalize_engagement(x)
    return labels.normalize_va(column, x)


def _unedited(column: str, text: str, exported: str, by_key: dict[str, str], name: str, line: int) -> bool:
    """Whether an edited export's cell still holds its exported value (case of a class and number format aside)."""
    if text == exported:
        return True
    if not text or not exported:
        return False
    if column == "label":
        return text.casefold() == exported.casefold()
    if column == "note":
        return unneutralise_cell(text) == unneutralise_cell(exported)
    try:
        was = parse_number(EXPORTED_PREFIX + column, exported)
    except InvalidLabelError:
        raise ImportLabelsError(
            name,
            f"{EXPORTED_PREFIX + column} {exported!r} is not a number; the exported_* columns are read-only, copy "
            "them back from the export",
            line,
        ) from None
    now = parse_number(column, text)
    return was is not None and now is not None and math.isclose(now, was, rel_tol=0, abs_tol=NUMBER_TOLERANCE)


def _same(value: Any, current: Any) -> bool:
    if isinstance(value, float) or isinstance(current, float):
        return math.isclose(float(value), float(current), rel_tol=0, abs_tol=NUMBER_TOLERANCE)
    return bool(value == current)


# ---------------------------------------------------------------------------------------------------- writing


def write_votes(session: Session, plan: Plan, ctx: Context, *, source: str, now: datetime | None = None) -> int:
    """Inserts the planned votes in bulk, after checking the context is still current; returns how many.

    Raises:
        StaleContextError: When faces or the annotator's history changed since :func:`load_context` (plan again).
    """
    st = repo.get_study(session, ctx.study)
    who = repo.get_or_create_annotator(session, ctx.annotator)
    if _stamp(session, st.id, who.id) != ctx.stamp:
        raise StaleContextError(f"study {ctx.study!r} or {ctx.annotator!r}'s labels changed during the import")
    if not plan.votes:
        return 0
    common = {"annotator_id": who.id, "kind": "set", "source": source[:300], "created_at": now or utcnow()}
    bulk_insert(session, common, plan.votes)
    status.mark(session, faces=(v["face_id"] for v in plan.votes))
    class_sums.mark(session, faces=[v["face_id"] for v in plan.votes])
    return len(plan.votes)


def bulk_insert(session: Session, common: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Inserts annotation rows with one DBAPI ``executemany``: ``common`` values on every row, plus each row's own.

    The statement is compiled once for the session's dialect and the constants go through their type's bind
    processing once, so the per-row cost is building one parameter set (SQLAlchemy's own executemany processes every
    parameter of every row: three times slower on SQLite, all of it under the write lock).

    Args:
        session: The write session.
        common: Column values shared by all rows (annotator_id, kind, source, created_at).
        rows: One dict per row, all with the same keys (face_id and the fields), holding plain Python values of the
            columns' types (int, str, float or None), which need no bind processing.
    """
    if not rows:
        return
    table = Annotation.metadata.tables[Annotation.__tablename__]
    dialect = session.get_bind().dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=[*common, *rows[0]])
    fixed = {}
    for k, v in common.items():
        proc = table.c[k].type.dialect_impl(dialect).bind_processor(dialect)
        fixed[k] = proc(v) if proc is not None else v
    params: list[Any]
    if compiled.positional:
        get = itemgetter(*(compiled.positiontup or []))
        params = [get({**fixed, **r}) for r in rows]
    else:
        params = [{**fixed, **r} for r in rows]
    session.connection().exec_driver_sql(compiled.string, params)
