"""The kept review state (db/status.py) against the whole-study rules it replaces on a user action.

The oracle is the written rule itself: :func:`db.labels.face_labels` over the whole study, fed to the pure
:func:`db.review.build_queue` and :meth:`db.review.ReviewFilter.matches`. Random small studies (several annotators,
double share, track votes, undos, skips, imports, a second model run, deletes) are checked after every few writes,
on SQLite and PostgreSQL, and the kept rows must equal the ones rebuilt from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import labels, quality, review, status, status_counts
from db.errors import NothingToUndoError
from db.review import REVIEW_ORDERS, ReviewFilter, StudySettings
from db.schema import FaceJudge, FaceStatus, MediaTotals, QueueCount, StudyStatus
from db.status import status_values
from tests.pg import fake_results, png_bytes

ANNOTATORS = ("alice", "bob", "carol")
CLASSES = ("Happiness", "Fear", "Neutral", "Sadness", "Anger")
BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)]


def _fill(store, rng: random.Random, study: str) -> None:
    for seed in (1, 2):
        name = f"img{seed}.png"
        store.ingest.ingest_results(
            study,
            png_bytes(seed),
            name,
            fake_results(
                name,
                BOXES,
                [rng.choice(CLASSES) for _ in BOXES],
                confidence=[rng.choice([0.3, 0.5, 0.7, 0.9]) for _ in BOXES],
                valence=[rng.choice([-0.6, 0.0, 0.5, None]) for _ in BOXES],
            ),
        )
    n = 8
    store.ingest.ingest_results(
        study,
        png_bytes(7),
        "v.mp4",
        fake_results(
            "v.mp4",
            BOXES[:2] * (n // 2),
            [rng.choice(CLASSES) for _ in range(n)],
            frames=[i // 2 * 10 for i in range(n)],
            tracks=[0, 1] * (n // 2),
            confidence=[rng.choice([0.3, 0.5, 0.9]) for _ in range(n)],
            valence=[rng.choice([-0.6, 0.5, None]) for _ in range(n)],
        ),
    )
    if rng.random() < 0.5:  # a second model run on one image: the study's chosen run may change
        store.ingest.ingest_results(
            study,
            png_bytes(1),
            "img1.png",
            fake_results("img1.png", BOXES, [rng.choice(CLASSES) for _ in BOXES], model="other", weights_hash="x"),
        )


def _filters(rows) -> list[ReviewFilter]:
    media = sorted({r.media_id for r in rows})
    tracks = sorted({r.track_id for r in rows if r.track_id is not None})
    out = [ReviewFilter(), ReviewFilter(labelled=True), ReviewFilter(labelled=False)]
    out += [ReviewFilter(media_id=m) for m in media[:2]]
    out += [ReviewFilter(media_id=media[0], labelled=False)] if media else []
    out += [ReviewFilter(track_id=t) for t in tracks[:1]]
    out += [ReviewFilter(model_label=c) for c in ("Happiness", "Fear")]
    out += [ReviewFilter(model_label="Neutral", labelled=False), ReviewFilter(human_label="Fear")]
    out += [ReviewFilter(labelled_by=a) for a in (*ANNOTATORS, "nobody")]
    return out


_T = tuple[object, ...]


def _snapshot(s: Session, sid: int) -> tuple[object, ...]:
    faces = [
        tuple(getattr(r, c.key) for c in FaceStatus.__table__.columns)
        for r in s.scalars(select(FaceStatus).where(FaceStatus.study_id == sid).order_by(FaceStatus.face_id))
    ]
    judges = sorted(
        s.execute(
            select(FaceJudge.face_id, FaceJudge.annotator_id, FaceJudge.judged, FaceJudge.skipped).where(
                FaceJudge.study_id == sid
            )
        )
    )
    counts = sorted(
        tuple(getattr(r, c.key) for c in QueueCount.__table__.columns if c.key not in ("id", "study_id"))
        for r in s.scalars(select(QueueCount).where(QueueCount.study_id == sid))
        if (r.faces, r.uncertainty, r.valence, r.disagreement, r.skipped) != (0, 0, 0, 0, 0)
    )
    totals = sorted(
        tuple(getattr(r, c.key) for c in MediaTotals.__table__.columns)
        for r in s.scalars(select(MediaTotals).where(MediaTotals.study_id == sid))
    )
    kept = s.get(StudyStatus, sid)
    model = (kept.model, kept.weights_hash, kept.model_version, tuple(kept.classes)) if kept else None
    return faces, [tuple(j) for j in judges], counts, totals, model


def _rule_rows(
    s: Session, sid: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The kept face rows and what the rules give, the kept classes and the rules'.

    The rules: ``face_labels`` over the whole study through ``status_values``; every chosen prediction's classes in
    the rules' face order.
    """
    cols = [c.key for c in FaceStatus.__table__.columns]
    rows, _ = labels.face_labels(s, sid)
    want = sorted(tuple(v[c] for c in cols) for v in (status_values(r, sid) for r in rows))
    got = [
        tuple(getattr(r, c) for c in cols)
        for r in s.scalars(select(FaceStatus).where(FaceStatus.study_id == sid).order_by(FaceStatus.face_id))
    ]
    kept = s.get(StudyStatus, sid)
    classes = list(dict.fromkeys(k for r in rows for k in r.model_probs or {}))
    return got, want, [tuple(kept.classes if kept else []), tuple(classes)]


def _check(store, study: str, rng: random.Random) -> None:
    def work(s: Session) -> None:
        sid = review.repo.get_study(s, study).id
        assert labels.choose_model(s, sid) == labels.count_model_runs(s, sid)
        got, want, (kept_classes, classes) = _rule_rows(s, sid)
        assert got == want
        assert set(kept_classes) == set(classes)
        rows, _ = labels.face_labels(s, sid)
        settings = review.study_settings(s, study)
        filters = _filters(rows)
        for flt in [filters[0], *rng.sample(filters[1:], min(6, len(filters) - 1))]:
            for who in (None, *ANNOTATORS):
                skipped = review.skipped_faces(s, sid, who) if who else set()
                for by in REVIEW_ORDERS:
                    got = review.review_queue(s, study, by, annotator=who, flt=flt, limit=4)
                    want = review.build_queue(
                        rows, by, annotator=who, skipped=skipped, settings=settings, study_id=sid, flt=flt, limit=4
                    )
                    assert got == want, (by, who, flt)
                    if who is not None and by == "uncertainty":  # one person, however the name is typed
                        variant = f" {who.upper()}  "
                        assert review.review_queue(s, study, by, annotator=variant, flt=flt, limit=4) == want
            assert review.browse(s, study, flt) == [r for r in rows if flt.matches(r)], flt
            assert review.browse(s, study, flt, limit=3) == [r for r in rows if flt.matches(r)][:3], flt
        for who in ANNOTATORS:  # "my labels": paged by a keyset, counted from the kept counts
            flt = rng.choice([f for f in filters if f.labelled_by is None])
            mine = sorted(
                (r for r in rows if dataclasses.replace(flt, labelled_by=who).matches(r)), key=lambda r: r.face_id
            )
            pages, after = [], None
            while True:
                page = review.labels_page(s, study, who.title(), flt, after=after, limit=2)
                assert page.total == len(mine), (who, flt)
                pages += page.items
                if page.after is None:
                    break
                after = page.after
            assert pages == mine, (who, flt)
        want = quality.compute_stats(study, rows, review.repo.count_rows(s, sid), labels.count_model_runs(s, sid))
        _close(status.study_stats(s, review.repo.get_study(s, study)), want)

    store.transaction(work, write=False)

    def rebuilt(s: Session) -> None:
        sid = review.repo.get_study(s, study).id
        before = _snapshot(s, sid)
        status.rebuild(s, sid)
        assert _snapshot(s, sid) == before

    store.transaction(rebuilt)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_a_freshly_ingested_study_keeps_what_the_rules_give(store, seed):
    """At ingest nobody has judged a face: every row comes from the prediction alone (``_ModelOnly``), and must equal
    the rules' row of the face, the classes in the rules' order, with no judges and the queue counts of the rows."""
    rng = random.Random(seed)
    _fill(store, rng, "fresh")

    def work(s: Session) -> None:
        sid = review.repo.get_study(s, "fresh").id
        got, want, (kept_classes, classes) = _rule_rows(s, sid)
        assert len(got) == 14 and got == want
        assert kept_classes == classes
        assert s.scalars(select(FaceJudge).where(FaceJudge.study_id == sid)).first() is None
        before = _snapshot(s, sid)
        status_counts.recount_queues(s, sid)
        assert _snapshot(s, sid) == before

    store.transaction(work)


def _write_labels(path, rows: list[tuple[int, str]]) -> None:
    path.write_text("face_id,label\n" + "".join(f"{f},{lab}\n" for f, lab in rows))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_review_state_equals_the_whole_study_rules(store, tmp_path, seed):
    rng = random.Random(seed)
    study = "s"
    _fill(store, rng, study)
    store.review.set_study_settings(
        study, StudySettings(independent=rng.random() < 0.5, double_share=rng.choice([0.0, 0.5, 1.0]))
    )
    _check(store, study, rng)
    for step in range(30):
        faces = store.recordings.faces(study)
        if not faces:
            break
        face = rng.choice(faces)
        who = rng.choice(ANNOTATORS)
        op = rng.random()
        if op < 0.35:
            kind = rng.random()
            if kind < 0.6:
                store.review.correct_face(face.face_id, who, label=rng.choice(CLASSES))
            elif kind < 0.8:
                store.review.correct_face(face.face_id, who, valence=rng.choice([-0.8, 0.0, 0.7]))
            else:
                store.review.correct_face(face.face_id, who, note="blurry")
        elif op < 0.45 and face.track_id is not None:
            store.review.correct_track(face.track_id, who, label=rng.choice(CLASSES), valence=rng.choice([None, -0.7]))
        elif op < 0.6:
            try:
                if face.track_id is not None and rng.random() < 0.3:
                    store.review.undo(who, track_id=face.track_id)
                else:
                    store.review.undo(who, face_id=face.face_id)
            except NothingToUndoError:
                pass
        elif op < 0.72:
            store.review.skip(face.face_id, who)
        elif op < 0.77:
            store.review.unskip(study, who, [face.face_id] if rng.random() < 0.5 else None)
        elif op < 0.9:
            path = tmp_path / f"labels{step}.csv"
            picks = rng.sample(faces, min(3, len(faces)))
            _write_labels(path, [(f.face_id, rng.choice(CLASSES)) for f in picks])
            store.review.import_labels(study, path, who)
        elif op < 0.95:
            store.review.set_study_settings(
                study, StudySettings(independent=rng.random() < 0.5, double_share=rng.choice([0.0, 0.5, 1.0]))
            )
        elif face.track_id is not None and rng.random() < 0.5:
            store.upkeep.delete_track(face.track_id)
        else:
            store.upkeep.delete_media(face.media_id)
        if step % 5 == 4:
            _check(store, study, rng)
    _check(store, study, rng)


@contextlib.contextmanager
def _later_columns(engine):
    """Today's write path on an older schema: the columns of existing tables that later revisions add (today's ORM
    inserts every column) exist while the block writes, and are dropped after it, so the upgrade adds them itself."""
    from sqlalchemy import inspect, text

    from db.schema import Base

    have = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in inspect(engine).get_table_names()}
    later = [
        (t.name, c)
        for t in Base.metadata.sorted_tables
        if t.name in have
        for c in t.columns
        if c.name not in have[t.name]
    ]
    with engine.begin() as conn:
        for table, col in later:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {col.name} {col.type.compile(engine.dialect)}"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            for table, col in later:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {col.name}"))


def test_migration_fills_the_state_of_a_study_made_before_it(store_url, tmp_path):
    """A study stored and labelled at the revision before the read model (today's write path, the read model switched
    off) reads the same after ``upgrade``."""
    from alembic.script import ScriptDirectory

    from db import ingest
    from db.engine import make_engine
    from db.migrate import alembic_config, upgrade
    from db.services import LabelStore

    engine = make_engine(store_url)
    before = ScriptDirectory.from_config(alembic_config()).get_revision("0008").down_revision
    assert isinstance(before, str)
    upgrade(engine, before)
    rng = random.Random(5)
    with _later_columns(engine), Session(engine, info={status.OFF: True}) as s, s.begin():
        for seed in (1, 2):
            name = f"img{seed}.png"
            ingest.ingest_results(
                s,
                "old",
                png_bytes(seed),
                name,
                fake_results(name, BOXES, [rng.choice(CLASSES) for _ in BOXES], valence=[-0.6, 0.5, None]),
            )
        ingest.ingest_results(
            s,
            "old",
            png_bytes(7),
            "v.mp4",
            fake_results("v.mp4", BOXES[:2] * 2, ["Fear"] * 4, frames=[0, 0, 10, 10], tracks=[0, 1] * 2),
        )
    with _later_columns(engine), Session(engine, info={status.OFF: True}) as s, s.begin():
        from db.schema import Face, Track

        faces = list(s.scalars(select(Face.id).order_by(Face.id)))
        track = s.scalars(select(Track.id)).first()
        labels.add_correction(s, "alice", face_id=faces[0], source="t", label="Happiness")
        labels.add_correction(s, "bob", face_id=faces[0], source="t", label="Sadness", valence=0.5)
        labels.add_correction(s, "bob", track_id=track, source="t", label="Anger")
        review.skip(s, faces[1], "alice")
    engine.dispose()
    store = LabelStore(store_url, data_dir=tmp_path / "data")
    try:
        store.upgrade()
        old = random.Random(0)
        for _ in range(3):
            _check(store, "old", old)
        assert store.review.review_queue("old", annotator="bob").left < store.review.review_queue("old").total
    finally:
        store.close()


def _close(got, want, path: str = "stats") -> None:
    """Equal, floats within the last digit ``quality._clean`` keeps (running sums differ from a pass over the rows)."""
    if isinstance(want, float) and isinstance(got, float):
        assert got == pytest.approx(want, abs=2e-6), path
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), path
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, tuple | list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{path}[{i}]")
    elif hasattr(want, "__dataclass_fields__"):
        for k in want.__dataclass_fields__:
            _close(getattr(got, k), getattr(want, k), f"{path}.{k}")
    else:
        assert got == want, path


@pytest.mark.parametrize("seed", [0, 1])
def test_kept_statistics_equal_the_whole_study_computation(store, tmp_path, seed):
    """The Dataset page's and ``db stats``' figures from the kept totals equal :func:`db.quality.compute_stats` over
    every face, through votes (class, valence, arousal, engagement), track votes, undos, imports and deletes: dense
    votes of four annotators on few faces, so that every agreement figure is defined most of the time."""
    rng = random.Random(seed)
    study = "st"
    _fill(store, rng, study)
    who4 = (*ANNOTATORS, "Dave")

    def stats_match(s: Session) -> int:
        st = review.repo.get_study(s, study)
        rows, primary = labels.face_labels(s, st.id)
        want = quality.compute_stats(study, rows, review.repo.count_rows(s, st.id), primary)
        got = status.study_stats(s, st)
        _close(got, want)
        return sum(x is not None for x in (want.fleiss_kappa, want.krippendorff_alpha, *want.annotator_kappa.values()))

    defined = 0
    for step in range(60):
        faces = store.recordings.faces(study)
        if not faces:
            break
        face = rng.choice(faces[:6] + faces[-4:])
        who = rng.choice(who4)
        op = rng.random()
        value = lambda: rng.choice([None, -0.9, -0.3, 0.1, 0.45, 0.8])  # noqa: E731
        if op < 0.55:
            store.review.correct_face(
                face.face_id,
                who,
                label=rng.choice([None, *CLASSES[:3]]) if rng.random() < 0.8 else CLASSES[0],
                valence=value(),
                arousal=value(),
                engagement=rng.choice([None, 0.0, 0.33, 1.0]),
            )
        elif op < 0.65 and face.track_id is not None:
            store.review.correct_track(face.track_id, who, label=rng.choice(CLASSES[:3]), valence=value())
        elif op < 0.8:
            with contextlib.suppress(NothingToUndoError):
                store.review.undo(who, face_id=face.face_id)
        elif op < 0.9:
            path = tmp_path / f"st{step}.csv"
            _write_labels(path, [(f.face_id, rng.choice(CLASSES[:3])) for f in rng.sample(faces, min(4, len(faces)))])
            store.review.import_labels(study, path, who)
        elif op < 0.95 and face.track_id is not None:
            store.upkeep.delete_track(face.track_id)
        elif op >= 0.98:
            store.upkeep.delete_media(face.media_id)
        if step % 6 == 5:
            defined += store.transaction(stats_match, write=False)
    defined += store.transaction(stats_match, write=False)
    assert defined > 0  # the agreement figures were exercised, not only their None
