"""The scale bench cannot rot: its fill paths store the same rows, and the bench runs every action at a tiny size."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import scale_fill  # noqa: E402

from db.schema import (  # noqa: E402
    Annotation,
    Annotator,
    EngagementWindow,
    Face,
    FaceStatus,
    LectureSegment,
    Media,
    MediaTotals,
    Person,
    PersonTrack,
    Prediction,
    QueueCount,
    ReviewSkip,
    StudyStatus,
    Track,
)
from db.services import LabelStore  # noqa: E402

TINY = scale_fill.Shape(faces=1500, students=4, minutes=2.0, feature_dim=8, crop=12, vote_share=0.2, skip_share=0.01)


def _store(tmp_path: Path, name: str, url: str | None = None) -> LabelStore:
    store = LabelStore(url or f"sqlite:///{tmp_path / f'{name}.sqlite3'}", data_dir=tmp_path / name)
    store.upgrade()
    return store


def _dump(store: LabelStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the fill writes, ids replaced by natural keys (recording, track number, frame, face index)."""

    def work(s: Any) -> dict[str, list[tuple[Any, ...]]]:
        fkey = (Media.sha256, Face.frame, Face.face_index)
        out: dict[str, list[tuple[Any, ...]]] = {}
        out["media"] = s.execute(
            select(
                Media.sha256,
                Media.filename,
                Media.kind,
                Media.size_bytes,
                Media.width,
                Media.height,
                Media.duration_s,
                Media.fps,
                Media.uploaded_by,
                Media.analysis_status,
                Media.analysed_until_s,
                Media.analysed_until_frame,
                Media.analysed_samples,
                Media.recut_crops,
            ).order_by(Media.sha256)
        ).all()
        out["tracks"] = s.execute(
            select(
                Media.sha256,
                Track.track_index,
                Track.n_faces,
                Track.start_s,
                Track.end_s,
                Track.engagement_score,
                Track.engagement_label,
            )
            .select_from(Track)
            .join(Media, Media.id == Track.media_id)
            .order_by(Media.sha256, Track.track_index)
        ).all()
        out["windows"] = s.execute(
            select(
                Media.sha256,
                Track.track_index,
                EngagementWindow.start_s,
                EngagementWindow.end_s,
                EngagementWindow.p_engaged,
            )
            .select_from(EngagementWindow)
            .join(Track, Track.id == EngagementWindow.track_id)
            .join(Media, Media.id == Track.media_id)
            .order_by(Media.sha256, Track.track_index, EngagementWindow.start_s)
        ).all()
        out["faces"] = s.execute(
            select(
                *fkey,
                Track.track_index,
                Face.time_s,
                Face.x1,
                Face.y1,
                Face.x2,
                Face.y2,
                Face.det_score,
                Face.crop_png,
                Face.features,
                Face.feature_dim,
                Face.feature_model,
            )
            .select_from(Face)
            .join(Media, Media.id == Face.media_id)
            .outerjoin(Track, Track.id == Face.track_id)
            .order_by(*fkey)
        ).all()
        out["predictions"] = s.execute(
            select(
                *fkey,
                Prediction.model,
                Prediction.weights_hash,
                Prediction.model_version,
                Prediction.probs,
                Prediction.label,
                Prediction.confidence,
                Prediction.valence,
                Prediction.arousal,
                Prediction.engagement,
            )
            .select_from(Prediction)
            .join(Face, Face.id == Prediction.face_id)
            .join(Media, Media.id == Face.media_id)
            .order_by(*fkey)
        ).all()
        out["persons"] = s.execute(
            select(Media.sha256, Track.track_index, Person.person_index)
            .select_from(PersonTrack)
            .join(Track, Track.id == PersonTrack.track_id)
            .join(Person, Person.id == PersonTrack.person_id)
            .join(Media, Media.id == Track.media_id)
            .order_by(Media.sha256, Track.track_index)
        ).all()
        reverted = aliased(Annotation)
        face_track = aliased(Track)
        out["annotations"] = s.execute(
            select(
                Media.sha256,
                Face.frame,
                Face.face_index,
                face_track.track_index,
                Annotator.name,
                Annotation.kind,
                reverted.label,
                Annotation.label,
                Annotation.valence,
                Annotation.arousal,
                Annotation.source,
            )
            .select_from(Annotation)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .outerjoin(Face, Face.id == Annotation.face_id)
            .outerjoin(face_track, face_track.id == Annotation.track_id)
            .outerjoin(Media, Media.id == func.coalesce(Face.media_id, face_track.media_id))
            .outerjoin(reverted, reverted.id == Annotation.reverts_id)
            .order_by(Annotation.id)
        ).all()
        out["skips"] = sorted(
            s.execute(
                select(Media.sha256, Face.frame, Face.face_index, Annotator.name)
                .select_from(ReviewSkip)
                .join(Face, Face.id == ReviewSkip.face_id)
                .join(Media, Media.id == Face.media_id)
                .join(Annotator, Annotator.id == ReviewSkip.annotator_id)
            ).all()
        )
        out["segments"] = s.execute(
            select(Media.sha256, LectureSegment.name, LectureSegment.start_s, LectureSegment.end_s)
            .select_from(LectureSegment)
            .join(Media, Media.id == LectureSegment.media_id)
            .order_by(Media.sha256, LectureSegment.start_s)
        ).all()
        # the review read model (db.status): the bulk path must leave it as the product path's flushes do
        fs = FaceStatus
        out["face_status"] = s.execute(
            select(*fkey, fs.route, fs.model_label, fs.model_confidence, fs.u_key, fs.human_label, fs.n_votes)
            .add_columns(fs.n_judges, fs.v_key, fs.d_key)
            .join(Face, Face.id == fs.face_id)
            .join(Media, Media.id == Face.media_id)
            .order_by(*fkey)
        ).all()
        qc = QueueCount
        out["queue_counts"] = sorted(
            s.execute(
                select(Media.sha256, qc.annotator_id, qc.model_label, qc.human_label, qc.faces, qc.uncertainty)
                .add_columns(qc.valence, qc.disagreement, qc.skipped)
                .join(Media, Media.id == qc.media_id)
                .where(qc.faces + qc.uncertainty + qc.valence + qc.disagreement + qc.skipped > 0)
            ).all()
        )
        # the model run the study's read model follows
        out["study_status"] = s.execute(select(StudyStatus.model, StudyStatus.weights_hash, StudyStatus.classes)).all()
        # the kept totals of each recording (Library counts, Dataset statistics)
        mt = MediaTotals
        out["media_totals"] = s.execute(
            select(Media.sha256, mt.faces, mt.predictions, mt.tracks, mt.crops, mt.features)
            .join(Media, Media.id == mt.media_id)
            .order_by(Media.sha256)
        ).all()
        return out

    return store.transaction(work, write=False)


def test_plan_has_the_shape_asked_for() -> None:
    recs = scale_fill.plan(scale_fill.Shape(faces=5000, students=3, minutes=2.0))
    assert sum(r.n_faces for r in recs) >= 5000
    assert sum(r.n_faces for r in recs) - 5000 < 3  # cut to the sample
    for r in recs:
        assert {t.student for t in r.tracks} == {0, 1, 2}
        assert all(1 <= t.end - t.start <= 400 for t in r.tracks)
        assert sum(n for _, here in r.present() for n in [len(here)]) == r.n_faces


@pytest.mark.parametrize("layout", scale_fill.LAYOUTS)
def test_bulk_fill_stores_the_rows_of_the_product_path(
    tmp_path: Path, engine_kind: str, request: Any, layout: str
) -> None:
    """Both paths store equal tables; on PostgreSQL the bulk path's faces and predictions go in by ``COPY``.

    In the product's layout no face has a crop row and every crop is re-cut from the recording's kept file; in the
    crops layout every face has its PNG and no file is kept.
    """
    shape = replace(TINY, layout=layout)
    dumps, crops_of = {}, {}
    for path in ("product", "bulk"):
        url = request.getfixturevalue("pg_server").new_database() if engine_kind == "postgresql" else None
        store = _store(tmp_path, path, url)
        try:
            rep = scale_fill.fill(store, shape, path=path)
            dumps[path] = _dump(store)
            crops_of[path] = _some_crops(store)
        finally:
            store.close()
        assert rep.faces >= TINY.faces and rep.recordings >= 1
        assert rep.votes > 0 and rep.undos > 0 and rep.skips > 0 and rep.segments > 0 and rep.track_votes > 0
        # as the product's default: a finished video's features in its file with SQLite, in the rows with PostgreSQL
        assert (rep.feature_bytes > 0) == (engine_kind == "sqlite"), rep.feature_bytes
        assert (rep.media_bytes > 0) == (layout == "product"), "the recordings are kept in the product's layout only"
    product, bulk = dumps["product"], dumps["bulk"]
    assert len(product["faces"]) >= TINY.faces
    assert all(row[3] is not None for row in product["faces"]), "every face is in a track"
    if layout == "product":
        assert all(row[10] is None for row in product["faces"]), "no crop row: crops are re-cut"
        assert all(row[-1] for row in product["media"]), "every recording's crops are re-cut from its file"
    else:
        assert all(row[10] is not None for row in product["faces"]), "every face has its crop"
    for path, crops in crops_of.items():  # what Review shows: a face-sized crop, re-cut or stored
        assert len(crops) == 3 and all(c.ndim == 3 and min(c.shape[:2]) >= 8 for c in crops), path
    for table in product:
        assert len(product[table]) > 0, table
        assert bulk[table] == product[table], table


def _some_crops(store: LabelStore) -> list[Any]:
    """The crops of the study's first, middle and last face, as the pages get them (:mod:`db.crops`)."""
    from db import crops

    def work(s: Any) -> list[Any]:
        ids = list(s.scalars(select(Face.id).order_by(Face.id)))
        picked = [ids[0], ids[len(ids) // 2], ids[-1]]
        got = crops.crop_arrays(crops.crop_sources(s, store.media_root, picked))
        return [crops.as_array(c) for _, c in sorted(got, key=lambda fc: fc[0])]

    return store.transaction(work, write=False)


@pytest.mark.parametrize("faces", [scale_fill.HUGE + 1])
def test_huge_fill_is_refused_without_the_flag(tmp_path: Path, faces: int) -> None:
    with pytest.raises(SystemExit, match="allow-huge"):
        scale_fill.check_disk(scale_fill.Shape(faces=faces), tmp_path, allow_huge=False)


def test_bench_times_every_action_at_a_tiny_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import bench_scale

    argv = ["--sizes", "800", "--engines", "sqlite", "--repeat", "1", "--timeout", "300", "--students", "4"]
    argv += ["--minutes", "2", "--feature-dim", "8", "--crop", "12", "--readme"]
    assert bench_scale.main(argv) == 0
    out = capsys.readouterr()
    table = [line for line in out.out.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table}
    for action in bench_scale.ACTIONS.values():
        assert action.what in rows, action.what
        cells = rows[action.what].split(" | ")
        assert re.fullmatch(r"\d+(\.\d+)? m?s", cells[1].strip()), rows[action.what]  # timed, no error, no cut
    assert "error" not in out.err, out.err
    log = tmp_path / "bench.log"  # the log printed while running gives the same table again
    log.write_text(out.err, encoding="utf-8")
    assert bench_scale.main(["--from-log", str(log), str(log), "--readme"]) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert again == table


def test_bench_cuts_an_action_over_its_timeout() -> None:
    import multiprocessing as mp

    import bench_scale

    bench_scale.ACTIONS["_sleep"] = bench_scale.Action("sleeps", lambda ctx: time.sleep(30))
    try:
        t0 = time.monotonic()
        t = bench_scale.time_action(mp.get_context("fork"), "sqlite://", "s", 1, "Happiness", "_sleep", 3, 1.0)
        assert time.monotonic() - t0 < 20
    finally:
        del bench_scale.ACTIONS["_sleep"]
    assert t.runs == [] and t.timeout == 1.0 and t.cell() == "> 1 s"


def test_study_wide_actions_walk_no_study(tmp_path: Path) -> None:
    """Every SELECT of the Review, Library listing and statistics actions is an index search bounded by what is shown.

    SQLite's plans here do not depend on the study's size (no statistics), so a tiny study shows what a million-face
    one runs; the walk this caught: the faces of a queue page checked against the study by the media index, every
    face of the study's recordings read to keep two dozen.
    """
    import scale_plans

    store = _store(tmp_path, "plans")
    scale_fill.fill(store, TINY, path="bulk")
    db_file = Path(store.engine.url.database or "")
    store.close()
    ctx = scale_plans.context(db_file, tmp_path / "ctx")
    walks = {}
    for name in scale_plans.STUDY_WIDE:
        plans = scale_plans.action_plans(ctx, name)
        assert plans, name  # the capture saw the action's statements
        walks.update({(name, " ".join(p.sql.split())[:300]): p.walks for p in plans if p.walks})
    ctx.store.close()
    assert walks == {}
    import scale_interleave

    assert (
        scale_interleave.main([str(db_file), str(db_file), "--actions", "library,review_first", "--rounds", "1"]) == 0
    )


def test_a_walk_is_recognised() -> None:
    import scale_plans

    walk = scale_plans.Plan("q", ("SEARCH faces USING COVERING INDEX ix_faces_media_id_frame (media_id=?)",))
    scan = scale_plans.Plan("q", ("SCAN face_status",))
    bounded = scale_plans.Plan(
        "q",
        (
            "SEARCH faces USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH faces USING COVERING INDEX ix_faces_media_id_frame (media_id=? AND frame>?)",
            "SCAN media USING COVERING INDEX ix_media_study_id",
        ),
    )
    assert walk.walks and scan.walks and not bounded.walks
