"""Library, recording and privacy reads ask SQL for what is shown, and answer what the whole-study reads answered."""

from __future__ import annotations

from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]


def _fill(store, study="s", seed=0):
    for i in range(3):
        store.ingest.ingest_results(
            study, png_bytes(100 + i + seed), f"img{i}.png", fake_results("x.png", BOXES, ["Fear", "Anger"], seed=i)
        )
    res = fake_results(
        "v.mp4", BOXES * 3, ["Neutral", "Sadness"] * 3, frames=[4, 4, 7, 7, 9, 9], tracks=[0, 1] * 3, seed=50
    )
    store.ingest.ingest_results(study, png_bytes(999 + seed), "v.mp4", res)
    return store.recordings.faces(study)


def test_one_media_item_reads_its_faces_only_in_the_whole_study_order(store):
    faces = _fill(store)
    store.review.correct_face(faces[-1].face_id, "alice", label="Happiness")
    faces = store.recordings.faces("s")
    for m in store.recordings.media("s"):
        assert store.recordings.faces("s", media_id=m.id) == [f for f in faces if f.media_id == m.id] != []
        assert m.n_faces == sum(f.media_id == m.id for f in faces)
    assert store.recordings.face(faces[-1].face_id) == store.recordings.faces("s")[-1]


def test_media_summary_equals_the_counts_over_every_face(store):
    faces = _fill(store)
    summary = store.recordings.media_summary("s")
    for m in store.recordings.media("s"):
        mine = [f for f in faces if f.media_id == m.id]
        tracks = {f.track_id for f in mine if f.track_id is not None}
        first = min((f.time_s or 0.0 for f in mine), default=0.0)
        assert summary.get(m.id, (0, 0.0)) == (len(tracks), first)


def test_frame_boxes_and_study_checks(store):
    faces = _fill(store)
    other = _fill(store, "other", seed=50)
    for f in faces:
        same = [g for g in faces if g.media_id == f.media_id and g.frame == f.frame]
        assert store.recordings.frame_boxes(f.media_id, f.frame) == [(g.face_id, g.box) for g in same]
    ids = [f.face_id for f in faces]
    theirs = [f.face_id for f in other]
    assert store.recordings.faces_in_study("s", ids + theirs + [10**9]) == set(ids)
    assert store.recordings.faces_in_study("nope", ids) == set()
    mine = {m.id for m in store.recordings.media("s")}
    assert store.recordings.media_in_study("s", [*mine, *(m.id for m in store.recordings.media("other"))]) == mine


def test_thumbnails_pick_each_track_s_most_confident_face(store):
    _fill(store)
    video = next(m for m in store.recordings.media("s") if m.kind == "video")
    best = store.recordings.best_faces(video.id)
    assert store.recordings.best_faces(video.id, list(best)) == best
    assert store.recordings.best_faces(video.id, [10**9]) == {}


def test_kept_face_counts_follow_ingests_and_deletes(store):
    faces = _fill(store)
    video = next(m for m in store.recordings.media("s") if m.kind == "video")
    assert video.n_faces == 6
    store.upkeep.delete_track(next(f.track_id for f in faces if f.track_id is not None))
    assert next(m for m in store.recordings.media("s") if m.id == video.id).n_faces == 3
    store.ingest.ingest_results("s", png_bytes(5000), "new.png", fake_results("new.png", BOXES, ["Fear", "Fear"]))
    assert [m.n_faces for m in store.recordings.media("s")][-1] == 2
    store.upkeep.delete_media(video.id)
    assert video.id not in {m.id for m in store.recordings.media("s")}
