"""The review queue per annotator: stored skips, counts left, filters, independent labelling, routing, undo."""

from __future__ import annotations

import pytest

from db.review import ReviewFilter, StudySettings, build_queue, route_value, visible_face, votes_needed
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)]


def _image(store, study="s", labels=("Happiness", "Fear", "Neutral"), seed=1, **kw):
    name = f"img{seed}.png"
    store.ingest.ingest_results(study, png_bytes(seed), name, fake_results(name, BOXES, list(labels), **kw))
    return [f.face_id for f in store.recordings.faces(study) if f.filename == name]


def _ids(queue):
    return [i.face_id for i in queue.items]


def test_review_queues(store):
    f1, f2, f3 = _image(store, confidence=[0.9, 0.3, 0.5], valence=[-0.6, 0.1, 0.0])
    q = store.review.review_queue("s", by="uncertainty")
    assert _ids(q) == [f2, f3, f1] and q.items[0].score == pytest.approx(0.7)
    assert (q.left, q.total) == (3, 3)
    store.review.correct_face(f2, "alice", label="Fear")
    assert _ids(store.review.review_queue("s", by="uncertainty")) == [f3, f1]
    assert _ids(store.review.review_queue("s", by="disagreement")) == []
    store.review.correct_face(f3, "alice", label="Happiness", valence=0.8)
    store.review.correct_face(f1, "alice", label="Sadness")
    dis = store.review.review_queue("s", by="disagreement")
    assert _ids(dis) == [f1, f3] and "model says Happiness" in dis.items[0].reason
    # f1: the model says Happiness with valence -0.6, but alice says Sadness: no contradiction left.
    assert _ids(store.review.review_queue("s", by="valence")) == []
    store.review.correct_face(f3, "alice", valence=-0.9)
    val = store.review.review_queue("s", by="valence")
    assert _ids(val) == [f3] and "negative valence" in val.items[0].reason
    assert store.review.review_queue("s", by="uncertainty", annotator="alice").left == 0


def test_skips_are_stored_per_annotator_and_counts_follow(store):
    f1, f2, _f3 = _image(store, confidence=[0.9, 0.3, 0.5])
    g1, _g2, _g3 = _image(store, seed=2, confidence=[0.2, 0.4, 0.6])
    q = store.review.review_queue("s", annotator="alice")
    assert (q.left, q.total) == (6, 6)
    media = {store.recordings.face(f1).media_id: 3, store.recordings.face(g1).media_id: 3}
    assert q.left_by_media == media and q.total_by_media == media
    store.review.skip(g1, "alice")
    store.review.skip(g1, "alice")  # idempotent
    q = store.review.review_queue("s", annotator="alice")
    assert g1 not in _ids(q) and q.left == 5 and q.skipped == 1
    assert q.left_by_media[store.recordings.face(g1).media_id] == 2
    # another annotator, or a fresh store on the same database (a reload), sees the same
    assert g1 in _ids(store.review.review_queue("s", annotator="bob"))
    assert store.review.review_queue("s", annotator="alice").skipped == 1
    store.review.correct_face(f2, "alice", label="Fear")
    q = store.review.review_queue("s", annotator="alice")
    assert q.left == 4 and f2 not in _ids(q)
    assert store.review.unskip("s", "alice") == 1
    assert g1 in _ids(store.review.review_queue("s", annotator="alice"))


def test_filters(store):
    f1, f2, f3 = _image(store, labels=("Happiness", "Fear", "Fear"))
    _g1, _, _ = _image(store, seed=2, labels=("Anger", "Anger", "Anger"))
    mid = store.recordings.face(f1).media_id
    assert set(_ids(store.review.review_queue("s", flt=ReviewFilter(media_id=mid)))) == {f1, f2, f3}
    assert set(_ids(store.review.review_queue("s", flt=ReviewFilter(model_label="Fear")))) == {f2, f3}
    store.review.correct_face(f3, "alice", label="Sadness")
    assert [f.face_id for f in store.review.browse("s", ReviewFilter(labelled_by="alice"))] == [f3]
    assert [f.face_id for f in store.review.browse("s", ReviewFilter(human_label="Sadness"))] == [f3]
    assert len(store.review.browse("s", ReviewFilter(labelled=False))) == 5
    assert store.review.browse("s", ReviewFilter(labelled_by="bob")) == []
    q = store.review.review_queue("s", by="disagreement", annotator="bob", flt=ReviewFilter(labelled=True))
    assert _ids(q) == [f3]


def test_routing_share_sends_faces_to_a_second_annotator(store):
    ids = []
    for seed in range(1, 11):
        ids += _image(store, seed=seed)
    sid = next(s.id for s in store.recordings.studies() if s.name == "s")
    store.review.set_study_settings("s", StudySettings(independent=True, double_share=0.3))
    routed = {f for f in ids if route_value(sid, f) < 0.3}
    assert 0 < len(routed) < len(ids), "30 faces: some, not all, are routed"
    for f in ids:
        store.review.correct_face(f, "alice", label="Neutral")
    bob = store.review.review_queue("s", annotator="bob", limit=100)
    assert set(_ids(bob)) == routed, "only the routed faces wait for a second vote"
    assert {votes_needed(store.review.study_settings("s"), sid, f) for f in routed} == {2}
    for f in routed:
        store.review.correct_face(f, "bob", label="Neutral")
    assert store.review.review_queue("s", annotator="carol").left == 0


def test_independent_mode_hides_other_votes_and_optionally_the_model(store):
    f1, _, _ = _image(store)
    store.review.correct_face(f1, "alice", label="Fear", valence=-0.4)
    face = store.recordings.face(f1)
    settings = StudySettings(independent=True)
    seen = visible_face(face, "bob", settings)
    assert seen.judgements == () and seen.label == face.model_label and seen.label_source == "model"
    assert seen.valence == face.model_valence
    own = visible_face(face, "alice", settings)
    assert (own.label, own.label_source, [j.annotator for j in own.judgements]) == ("Fear", "human", ["alice"])
    hidden = visible_face(face, "bob", StudySettings(independent=True, hide_model=True))
    assert hidden.label is None and hidden.model_probs is None and hidden.model_label is None
    assert visible_face(face, "bob", StudySettings()) == face
    # reasons name no label in an independent study
    store.review.set_study_settings("s", settings)
    store.review.correct_face(f1, "carol", label="Fear")
    q = store.review.review_queue("s", by="disagreement", annotator="bob")
    assert q.items and all("Fear" not in i.reason and "Happiness" not in i.reason for i in q.items)


def test_study_settings_round_trip_and_bounds(store):
    from db.errors import StoreError

    _image(store)
    assert store.review.study_settings("s") == StudySettings()
    assert store.review.study_settings("nope") == StudySettings()
    out = store.review.set_study_settings("s", StudySettings(independent=False, hide_model=True, double_share=0.2))
    assert out == StudySettings(independent=False, hide_model=False, double_share=0.2), "hide_model needs independent"
    with pytest.raises(StoreError, match="from 0 to 1"):
        store.review.set_study_settings("s", StudySettings(double_share=1.5))
    assert store.review.study_settings("s").double_share == 0.2


def test_undo_is_the_persons_latest_correction(store):
    f1, f2, _ = _image(store)
    assert store.review.last_correction("s", "alice") is None
    a = store.review.correct_face(f1, "alice", label="Fear")
    store.review.correct_face(f2, "bob", label="Anger")
    b = store.review.correct_face(f2, "alice", label="Sadness")
    assert store.review.last_correction("s", "alice").id == b.id
    store.review.undo("alice", annotation_id=b.id)
    assert store.review.last_correction("s", "alice").id == a.id
    assert store.review.last_correction("s", "bob").face_id == f2


def test_media_lookup_by_sha_and_crops_in_one_call(store):
    import hashlib

    f1, f2, _ = _image(store)
    sha = hashlib.sha256(png_bytes(1)).hexdigest()
    m = store.recordings.media_by_sha256("s", sha)
    assert m is not None and m.id == store.recordings.face(f1).media_id and m.n_faces == 3
    assert (
        store.recordings.media_by_sha256("s", "0" * 64) is None
        and store.recordings.media_by_sha256("other", sha) is None
    )
    crops = store.recordings.face_crops([f1, f2])
    assert set(crops) == {f1, f2} and crops[f1] == store.recordings.face_crop(f1)


def test_build_queue_is_pure_and_checks_the_order():
    from db.errors import StoreError

    with pytest.raises(StoreError, match="unknown review order"):
        build_queue([], "nonsense", annotator=None, skipped=set(), settings=StudySettings(), study_id=1)  # type: ignore[arg-type]
    q = build_queue([], "uncertainty", annotator="a", skipped=set(), settings=StudySettings(), study_id=1)
    assert (q.items, q.left, q.total) == ((), 0, 0)


def test_undo_target_read_newest_first_equals_the_whole_history_rule(store, monkeypatch):
    """last_correction pages back through the annotator's own rows; it names what the rule over the study's whole
    history names, through votes, undos (also of older rows after an undo), and a second study's rows in between."""
    import random

    from db import labels, repo

    monkeypatch.setattr(labels, "_UNDO_PAGE", 3)  # page boundaries inside the history
    rng = random.Random(7)
    faces = {"s": _image(store, "s", seed=1) + _image(store, "s", seed=2), "t": _image(store, "t", seed=3)}
    classes = ["Fear", "Anger", "Sadness", "Happiness"]

    def oracle(study: str, who: str) -> int | None:
        def work(s):
            st = repo.get_study(s, study)
            active = labels.active_corrections(a for a, n in repo.annotations_of_study(s, st.id) if n == who)
            return max(active) if active else None

        return store.transaction(work, write=False)

    for _ in range(60):
        study, who = rng.choice(["s", "s", "t"]), rng.choice(["alice", "bob"])
        last = store.review.last_correction(study, who)
        assert (last.id if last else None) == oracle(study, who)
        if last is not None and rng.random() < 0.35:
            store.review.undo(who, annotation_id=last.id)
        else:
            store.review.correct_face(rng.choice(faces[study]), who, label=rng.choice(classes))
    for study in ("s", "t"):
        for who in ("alice", "bob", "carol"):
            last = store.review.last_correction(study, who)
            assert (last.id if last else None) == oracle(study, who)
