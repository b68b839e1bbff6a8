"""One recording over several processes on the path that stores (issue 25 item 1): the analysis service cuts a gallery
recording into time ranges, stores each range's stretches with its own resume point, joins the tracks at the seams,
and stores what one process stores: same faces, boxes within 1 px, same tracks and persons; a run stopped midway
resumes every range where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from affectlab import ranged
from affectlab.analysis import AnalysisService, Options, Source
from db.schema import AnalysisRange, Face, Media, Person, PersonTrack, Prediction, Study, Track
from db.service_ingest import Ingest
from db.services import LabelStore
from models import ranges
from models.analysis import AnalysisSession
from models.faces import FaceDetector
from models.video import VideoConfig
from tests.test_ranges import MODEL, gallery, open_models  # noqa: F401 - the gallery recording (a fixture)
from tests.videos import random_recognizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

OPTIONS = Options(fps=0, commit_every_s=0.5, keep_file=False)  # every frame; stretches of half a second


class Stopped(BaseException):
    """What stops an analysis midway (a Ctrl-C, a closed page)."""


@pytest.fixture(scope="module")
def models_here():
    return FaceDetector(), random_recognizer(MODEL, seed=0)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabelStore:
    monkeypatch.setattr(ranges, "MIN_RANGE_S", 0.5)  # the 4 s gallery cut into ranges of at least half a second
    s = LabelStore(f"sqlite:///{tmp_path / 'store.sqlite3'}", data_dir=tmp_path)
    s.upgrade()
    return s


def _session(models_here, workers: int, chunk_frames: int | None = None) -> AnalysisSession:
    detector, recognizer = models_here
    video = VideoConfig(detect_every=2)
    if chunk_frames:
        video = VideoConfig(detect_every=2, chunk_frames=chunk_frames)
    return AnalysisSession(
        detector=detector,
        recognizer=recognizer,
        video=video,
        range_workers=workers,
        opener=open_models,
    )


def _analyse(store: LabelStore, study: str, session: AnalysisSession, path: Path):
    service = AnalysisService(store, study, lambda: session, OPTIONS)
    return service.analyze(Source.file(path))


def _stored(store: LabelStore, study: str):
    """Every stored face of the study's recording (frame, index, box, label, track) and the tracks' persons."""

    def work(s):
        st = s.scalar(select(Study).where(Study.name == study))
        media = s.scalar(select(Media).where(Media.study_id == st.id))
        faces = s.execute(
            select(Face.frame, Face.face_index, Face.x1, Face.y1, Face.x2, Face.y2, Prediction.label, Track.track_index)
            .join(Prediction, Prediction.face_id == Face.id)
            .join(Track, Track.id == Face.track_id)
            .where(Face.media_id == media.id)
            .order_by(Face.frame, Face.face_index)
        ).all()
        persons = dict(
            s.execute(
                select(Track.track_index, Person.person_index)
                .join(PersonTrack, PersonTrack.track_id == Track.id)
                .join(Person, Person.id == PersonTrack.person_id)
                .where(Track.media_id == media.id)
            ).all()
        )
        cut = s.scalars(select(AnalysisRange.number).where(AnalysisRange.media_id == media.id)).all()
        return media.analysis_status, [tuple(f) for f in faces], persons, len(cut)

    return store.transaction(work, write=False)


def _same(one, cut) -> None:
    status, faces, persons, _ = cut
    assert status == one[0] == "complete"
    assert len(faces) == len(one[1]) > 0
    for a, b in zip(one[1], faces, strict=True):
        assert a[:2] == b[:2] and a[6:] == b[6:]  # same frame, index, label and track
        assert max(abs(x - y) for x, y in zip(a[2:6], b[2:6], strict=True)) <= 1.0
    assert persons == one[2]


@pytest.fixture
def straight(store: LabelStore, models_here, gallery: Path):  # noqa: F811
    outcome = _analyse(store, "one", _session(models_here, 1), gallery)
    assert outcome.status == "stored", outcome.error
    got = _stored(store, "one")
    assert got[3] == 0  # one process: not cut
    return got


@pytest.mark.parametrize("seams", [2, 3])
def test_cut_at_seams_stores_what_one_process_stores(
    store: LabelStore,
    models_here,
    gallery: Path,  # noqa: F811
    straight,
    seams: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ranged, "IN_PROCESS", True)
    outcome = _analyse(store, "cut", _session(models_here, seams + 1), gallery)
    assert outcome.status == "stored", outcome.error
    cut = _stored(store, "cut")
    assert cut[3] == seams + 1
    _same(straight, cut)
    plan = ranges.plan_ranges(gallery, None, seams + 1, detect_every=2, min_range_s=0.5)
    walker = {f[7] for f in straight[1] if f[3] > 120}  # the student walking along the bottom row
    assert len(walker) == 1
    frames = [f[0] for f in straight[1] if f[7] in walker]
    assert all(min(frames) < r.stop_index < max(frames) for r in plan[:-1] if r.stop_index)  # across every seam


def test_worker_processes_store_what_one_process_stores(
    store: LabelStore,
    models_here,
    gallery: Path,  # noqa: F811
    straight,
) -> None:
    outcome = _analyse(store, "workers", _session(models_here, 2), gallery)
    assert outcome.status == "stored", outcome.error
    cut = _stored(store, "workers")
    assert cut[3] == 2
    _same(straight, cut)


def test_a_stopped_cut_run_resumes_every_range(
    store: LabelStore,
    models_here,
    gallery: Path,  # noqa: F811
    straight,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ranged, "IN_PROCESS", True)
    real = Ingest.store_chunk
    calls = {"n": 0}

    def stopping(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Stopped
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ingest, "store_chunk", stopping)
    with pytest.raises(Stopped):
        _analyse(store, "resumed", _session(models_here, 3, chunk_frames=4), gallery)
    monkeypatch.setattr(Ingest, "store_chunk", real)

    def partial(s):
        media = s.scalar(select(Media).order_by(Media.id.desc()).limit(1))
        n_faces = len(s.scalars(select(Face.id).where(Face.media_id == media.id)).all())
        cut = s.scalars(select(AnalysisRange).where(AnalysisRange.media_id == media.id)).all()
        return media.analysis_status, n_faces, len(cut), sum(r.until_frame is not None for r in cut)

    status, faces, n_ranges, moved = store.transaction(partial, write=False)
    assert status == "partial" and 0 < faces < len(straight[1]) and n_ranges == 3 and moved >= 1
    again = _analyse(store, "resumed", _session(models_here, 3, chunk_frames=4), gallery)
    assert again.status == "stored" and again.resumed_from_s is not None, again.error
    _same(straight, _stored(store, "resumed"))
