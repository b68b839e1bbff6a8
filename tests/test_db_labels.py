"""Corrections as an append-only history: current labels, undo, track-level labels, import."""

from __future__ import annotations

import pytest

from db.errors import ImportLabelsError, InvalidLabelError, NotFoundError, NothingToUndoError
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)]


def _image(store, study="s", labels=("Happiness", "Fear", "Neutral"), seed=1, **kw):
    name = f"img{seed}.png"
    store.ingest.ingest_results(study, png_bytes(seed), name, fake_results(name, BOXES, list(labels), **kw))
    return [f.face_id for f in store.recordings.faces(study) if f.filename == name]


def _video(store, study="s", seed=7):
    res = fake_results(
        "v.mp4", BOXES[:2] * 3, ["Neutral", "Sadness"] * 3, frames=[0, 0, 10, 10, 20, 20], tracks=[0, 1] * 3, seed=seed
    )
    store.ingest.ingest_results(study, png_bytes(seed), "v.mp4", res)
    faces = [f for f in store.recordings.faces(study) if f.filename == "v.mp4"]
    return faces


def test_current_label_is_latest_per_annotator_and_predictions_stay(store):
    f1, f2, _ = _image(store)
    a = store.review.correct_face(f1, "alice", label="anger", note="  frowning ")
    assert a.label == "Anger" and a.note == "frowning" and a.kind == "set" and a.source == "web"
    store.review.correct_face(f1, "alice", valence=-0.5)  # keeps the class set before
    store.review.correct_face(f1, "bob", label="Anger", arousal=0.3)
    face = store.recordings.face(f1)
    assert (face.label, face.label_source, face.label_annotators, face.label_agreement) == ("Anger", "human", 2, 1.0)
    assert face.valence == -0.5 and face.valence_annotators == 1 and face.arousal == 0.3
    assert face.model_label == "Happiness"  # the prediction is untouched
    store.review.correct_face(f1, "alice", label="Disgust")
    face = store.recordings.face(f1)
    # One vote each: the tie goes to the most recent vote.
    assert face.label == "Disgust" and face.label_agreement == 0.5
    assert {j.annotator: j.label for j in face.judgements} == {"alice": "Disgust", "bob": "Anger"}
    assert store.recordings.face(f2).label_source == "model" and store.recordings.face(f2).label == "Fear"
    hist = store.recordings.history(face_id=f1)
    assert [h.label for h in hist] == ["Anger", None, "Anger", "Disgust"]
    assert store.recordings.predictions(f1)[0]["label"] == "Happiness"


def test_undo_is_a_new_row_and_restores_the_previous_value(store):
    f1, *_ = _image(store)
    first = store.review.correct_face(f1, "alice", label="Anger")
    second = store.review.correct_face(f1, "alice", label="Fear")
    store.review.correct_face(f1, "bob", label="Surprise")
    u = store.review.undo("alice", face_id=f1)
    assert u.kind == "undo" and u.reverts_id == second.id and u.label is None
    assert {j.annotator: j.label for j in store.recordings.face(f1).judgements} == {"alice": "Anger", "bob": "Surprise"}
    store.review.undo("alice", face_id=f1)
    assert {j.annotator: j.label for j in store.recordings.face(f1).judgements} == {"bob": "Surprise"}
    with pytest.raises(NothingToUndoError, match="alice"):
        store.review.undo("alice", face_id=f1)
    with pytest.raises(NothingToUndoError, match="already undone"):
        store.review.undo("bob", annotation_id=first.id)
    hist = store.recordings.history(face_id=f1)
    assert [h.kind for h in hist] == ["set", "set", "set", "undo", "undo"]
    assert len(store.recordings.predictions(f1)) == 1


def test_track_correction_applies_to_faces_without_their_own(store):
    faces = _video(store)
    t0 = [f for f in faces if f.track_index == 0]
    track_id = t0[0].track_id
    store.review.correct_face(t0[1].face_id, "alice", label="Surprise")
    store.review.correct_track(track_id, "alice", label="Happiness", engagement=0.333)
    store.review.correct_track(track_id, "bob", label="Contempt")
    now = {f.face_id: f for f in store.recordings.faces("s")}
    assert now[t0[0].face_id].label_source == "human"
    assert {j.annotator: j.label for j in now[t0[0].face_id].judgements} == {"alice": "Happiness", "bob": "Contempt"}
    assert {j.annotator: j.label for j in now[t0[1].face_id].judgements} == {"alice": "Surprise", "bob": "Contempt"}
    assert now[t0[1].face_id].engagement == 0.33  # from the track, the face's own row set only the class
    assert "label" in next(j for j in now[t0[0].face_id].judgements if j.annotator == "alice").from_track
    other = next(f for f in now.values() if f.track_index == 1)
    assert other.label_source == "model"
    # The face's history shows the track rows too; undoing the track row restores the model label for bob's faces.
    assert len(store.recordings.history(face_id=t0[0].face_id)) == 2
    store.review.undo("bob", track_id=track_id)
    assert {j.annotator for j in store.recordings.face(t0[0].face_id).judgements} == {"alice"}


def test_invalid_corrections_are_refused(store):
    f1, *_ = _image(store)
    with pytest.raises(InvalidLabelError, match="one of Anger"):
        store.review.correct_face(f1, "a", label="Joy")
    with pytest.raises(InvalidLabelError, match="-1 to 1"):
        store.review.correct_face(f1, "a", valence=1.5)
    with pytest.raises(InvalidLabelError, match=r"0, 0\.33, 0\.66, 1"):
        store.review.correct_face(f1, "a", engagement=0.5)
    with pytest.raises(InvalidLabelError, match="at least one"):
        store.review.correct_face(f1, "a")
    with pytest.raises(NotFoundError, match="face"):
        store.review.correct_face(10**6, "a", label="Fear")
    assert store.recordings.history(face_id=f1) == []


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_import_labels_applies_rows_and_skips_the_annotators_own_values(store, tmp_path):
    f1, f2, f3 = _image(store)
    body = f"face_id,label,valence,engagement,note\n{f1},Anger,0.2,,x\n{f2},Fear,,,\n{f3},,,1,\n"
    csv = _write(tmp_path / "l.csv", body)
    rep = store.review.import_labels("s", csv, "carol")
    # f2's Fear equals the model's label: carol's agreement is a vote too.
    assert (rep.rows, rep.annotations_added, rep.fields_unchanged) == (3, 3, 0)
    assert store.recordings.face(f1).label == "Anger" and store.recordings.face(f1).note == "x"
    assert (store.recordings.face(f2).label_source, store.recordings.face(f2).label_annotators) == ("human", 1)
    assert store.recordings.face(f3).engagement == 1.0 and store.recordings.face(f3).label_source == "model"
    assert store.recordings.history(face_id=f1)[0].source == "import:l.csv"
    # Again: every value is carol's current one already.
    rep = store.review.import_labels("s", csv, "carol")
    assert (rep.annotations_added, rep.already_current, rep.fields_unchanged) == (0, 5, 5)


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("face_id,label\n{f1},Anger\n{f2},Joy\n", 3, "invalid label 'Joy'"),
        ("face_id,valence\n{f1},0.5\n{f2},2\n", 3, "invalid valence"),
        ("face_id,engagement\n{f1},0.66\n{f2},0.5\n", 3, "EngageWild"),
        ("face_id,label\n{f1},Anger\nabc,Fear\n", 3, "not a face id"),
        ("face_id,label\n{f1},Anger\n999999,Fear\n", 3, "not in study"),
        ("id,label\n{f1},Anger\n", 1, "no 'face_id' column"),
        ("face_id,colour\n{f1},red\n", 1, "unknown column 'colour'"),
        ("face_id\n{f1}\n", 1, "no column to import"),
    ],
)
def test_import_labels_bad_row_applies_nothing(store, tmp_path, body, line, reason):
    f1, f2, _ = _image(store)
    csv = _write(tmp_path / "bad.csv", body.format(f1=f1, f2=f2))
    with pytest.raises(ImportLabelsError, match=reason) as err:
        store.review.import_labels("s", csv, "dave")
    assert err.value.line == line and str(err.value).startswith(f"bad.csv:{line}: ")
    assert "nothing of bad.csv was applied" in str(err.value)
    assert store.recordings.history(face_id=f1) == []


def test_active_corrections_rule_is_pure_and_order_free():
    from types import SimpleNamespace

    from db.labels import active_corrections

    def row(i, kind="set", reverts=None):
        return SimpleNamespace(id=i, kind=kind, reverts_id=reverts)

    history = [row(1), row(2), row(3, "undo", 2), row(4), row(5, "undo", 4), row(6, "undo", 99)]
    active = active_corrections(reversed(history))  # any order: applied in id order
    assert list(active) == [1] and max(active) == 1
    assert active_corrections([]) == {}
    # An undo of an undo is not a redo: the reverted row stays reverted.
    assert list(active_corrections([row(1), row(2, "undo", 1), row(3, "undo", 2)])) == []


def test_one_person_one_annotator_whatever_the_case_and_spaces(store):
    f1, f2, f3 = _image(store)
    store.review.correct_face(f1, "alice", label="Anger")
    store.review.correct_face(f2, " Alice ", label="Fear")  # the same person, typed differently
    store.review.correct_face(f1, "ALICE", label="Disgust")
    store.review.correct_face(f3, "Al ice", label="Neutral")
    store.review.correct_face(f1, "bob", label="Anger")
    face = store.recordings.face(f1)
    assert sorted((j.annotator, j.label) for j in face.judgements) == [("alice", "Disgust"), ("bob", "Anger")]
    assert {j.annotator for f in store.recordings.faces("s") for j in f.judgements} == {"alice", "bob"}
    assert store.exports.stats("s").counts["annotators"] == 2
    assert store.review.annotator_name("  ALIce") == "alice", "the stored display name"
    assert store.review.annotator_name("  Carol  Ann ") == "Carol Ann", "a new person: the name as typed, trimmed"
    store.review.correct_face(f2, "Carol  Ann", label="Fear")
    assert store.review.annotator_name("carolann") == "Carol Ann"
