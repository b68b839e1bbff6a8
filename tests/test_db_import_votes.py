"""import-labels keeps every annotator's vote and counts nothing twice; bad files are refused whole."""

from __future__ import annotations

import csv
import io

import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import func, select

from db import label_import
from db.errors import ImportLabelsError
from db.schema import Annotation
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)]
MODEL = [["Happiness", "Fear", "Neutral"], ["Sadness", "Anger", "Surprise"]]
VALENCE = [[0.5, -0.4, 0.0], [-0.6, -0.3, 0.2]]


def _faces(store, study="s"):
    """Six faces in two images; the model's classes are MODEL and its valences VALENCE."""
    ids = []
    for i, (labels, valence) in enumerate(zip(MODEL, VALENCE, strict=True)):
        name = f"img{i}.png"
        res = fake_results(name, BOXES, labels, seed=i, valence=valence)
        store.ingest.ingest_results(study, png_bytes(40 + i), name, res)
        ids += [f.face_id for f in store.recordings.faces(study) if f.filename == name]
    return ids


def _count(store) -> int:
    return store.transaction(lambda s: s.scalar(select(func.count()).select_from(Annotation)), write=False)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _labels_file(path, rows, columns=("face_id", "label", "valence")):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return _write(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------- votes


def test_second_annotator_agreeing_is_recorded_and_agreement_uses_it(store, tmp_path):
    ids = _faces(store)
    votes = ["Anger", "Fear", "Happiness", "Sadness", "Neutral"]  # Fear: as the model says
    vals = [0.1, -0.2, 0.7, -0.5, 0.0]
    f = _labels_file(tmp_path / "alice.csv", [(i, lab, v) for i, lab, v in zip(ids, votes, vals, strict=False)])

    rep = store.review.import_labels("s", f, "alice")
    assert (rep.rows, rep.annotations_added) == (5, 5)
    rep = store.review.import_labels("s", f, "bob")
    assert (rep.rows, rep.annotations_added) == (5, 5)
    assert _count(store) == 10

    face = store.recordings.face(ids[1])
    assert (face.label, face.label_source, face.label_annotators, face.label_agreement) == ("Fear", "human", 2, 1.0)
    assert {j.annotator for j in face.judgements} == {"alice", "bob"}
    stats = store.exports.stats("s")
    assert stats.counts["annotators"] == 2 and stats.counts["corrected_faces"] == 5
    assert stats.annotator_kappa == {"alice | bob": 1.0}
    assert stats.fleiss_kappa == 1.0 and stats.krippendorff_alpha == 1.0
    assert stats.ccc["valence"]["annotators"] == 1.0 and stats.ccc["valence"]["n"] == 5
    # The model agrees on Fear and Sadness.
    assert stats.human_counts["Fear"] == 1 and stats.model_accuracy == pytest.approx(2 / 5)

    # A third annotator differing on one face: the pairwise kappa is sklearn's on the stored votes.
    carol = ["Anger", "Fear", "Happiness", "Sadness", "Surprise"]
    rows = [(i, lab, "") for i, lab in zip(ids, carol, strict=False)]
    store.review.import_labels("s", _labels_file(tmp_path / "c.csv", rows), "carol")
    stats = store.exports.stats("s")
    assert stats.annotator_kappa["alice | carol"] == pytest.approx(cohen_kappa_score(votes, carol), abs=1e-6)
    assert stats.annotator_kappa["alice | bob"] == 1.0
    assert stats.fleiss_kappa is not None and stats.fleiss_kappa < 1.0


def test_same_file_again_by_the_same_annotator_adds_nothing(store, tmp_path):
    ids = _faces(store)
    rows = [(ids[0], "Anger", 0.3), (ids[1], "Fear", ""), (ids[2], "", -0.25)]
    f = _labels_file(tmp_path / "a.csv", rows)
    assert store.review.import_labels("s", f, "alice").annotations_added == 3
    before = _count(store)
    rep = store.review.import_labels("s", f, "alice")
    assert (rep.annotations_added, rep.already_current) == (0, 4)
    assert _count(store) == before
    # One changed value on one face: one new row, holding only that value.
    f2 = _labels_file(tmp_path / "b.csv", [(ids[0], "anger", 0.3), (ids[1], "Fear", "0.5"), (ids[2], "", "-0.25")])
    rep = store.review.import_labels("s", f2, "alice")
    assert (rep.annotations_added, rep.already_current) == (1, 4)
    last = store.recordings.history(face_id=ids[1])[-1]
    assert (last.annotator, last.label, last.valence) == ("alice", None, 0.5)
    assert store.recordings.face(ids[1]).label == "Fear"


def test_own_track_value_counts_as_current_but_others_votes_do_not(store, tmp_path):
    res = fake_results("v.mp4", BOXES[:2] * 2, ["Neutral", "Sadness"] * 2, frames=[0, 0, 5, 5], tracks=[0, 1] * 2)
    store.ingest.ingest_results("s", png_bytes(9), "v.mp4", res)
    faces = store.recordings.faces("s")
    t0 = [x for x in faces if x.track_index == 0]
    store.review.correct_track(t0[0].track_id, "alice", label="Happiness")
    store.review.correct_face(t0[1].face_id, "bob", label="Happiness")
    f = _labels_file(tmp_path / "t.csv", [(x.face_id, "Happiness") for x in t0], ("face_id", "label"))
    # alice's track label already says Happiness on both faces; bob's vote is not alice's.
    assert store.review.import_labels("s", f, "alice").annotations_added == 0
    assert store.review.import_labels("s", f, "bob").annotations_added == 1


def test_human_confirming_the_models_class_is_stored_and_counted(store):
    from webapp.services import review

    ids = _faces(store)
    model = store.recordings.face(ids[0]).model_label
    row = review.correct(store, "alice", face_id=ids[0], label=model)  # Review: the predicted class's button
    assert row.label == model and row.kind == "set"
    assert [h.label for h in store.recordings.history(face_id=ids[0])] == [model]
    face = store.recordings.face(ids[0])
    assert (face.label_source, face.label_annotators) == ("human", 1)
    store.review.correct_face(ids[0], "bob", label=model)
    stats = store.exports.stats("s")
    assert stats.counts["annotators"] == 2 and stats.human_counts[model] == 1 and stats.model_accuracy == 1.0
    assert store.recordings.face(ids[0]).label_annotators == 2


# ---------------------------------------------------------------------------------------------------- exports


def _export(store, tmp_path, name="e.csv"):
    store.exports.export("s", "csv", tmp_path / name)
    with (tmp_path / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _save(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def test_export_keeps_model_and_human_columns_apart(store, tmp_path):
    ids = _faces(store)
    store.review.correct_face(ids[0], "alice", label="Anger")
    rows = {int(r["face_id"]): r for r in _export(store, tmp_path)}
    assert (rows[ids[0]]["label"], rows[ids[0]]["human_label"], rows[ids[0]]["model_label"]) == (
        "Anger",
        "Anger",
        MODEL[0][0],
    )
    assert (rows[ids[1]]["label"], rows[ids[1]]["human_label"], rows[ids[1]]["label_source"]) == (
        MODEL[0][1],
        "",
        "model",
    )
    for r in rows.values():
        for col in label_import.EDITABLE:
            assert r["exported_" + col] == r[col]
    card = (tmp_path / "e.README.md").read_text()
    assert "exported_label" in card and "import-labels" in card


def test_unedited_export_adds_nothing_and_one_edit_adds_one_vote(store, tmp_path):
    ids = _faces(store)
    store.review.correct_face(ids[0], "bob", label="Anger", valence=0.25, note="frowning")
    before = _count(store)
    rows = _export(store, tmp_path)
    for who in ("alice", "bob"):
        rep = store.review.import_labels("s", tmp_path / "e.csv", who)
        assert rep.annotations_added == 0
        # 6 labels, 6 valences (5 model, 1 human), 6 model arousals, 1 note.
        assert rep.unedited == 19
    assert _count(store) == before

    edited = [dict(r) for r in rows]
    target = next(r for r in edited if int(r["face_id"]) == ids[3])
    assert target["label"] == MODEL[1][0]
    target["label"] = "Happiness"
    edited[0]["label"] = edited[0]["label"].upper()  # case only: the same class
    rep = store.review.import_labels("s", _save(tmp_path / "edited.csv", edited), "alice")
    assert (rep.annotations_added, rep.unedited) == (1, 18)
    assert _count(store) == before + 1
    h = store.recordings.history(face_id=ids[3])
    assert [(x.annotator, x.label, x.valence, x.note) for x in h] == [("alice", "Happiness", None, None)]
    # The same edited file again: the edit is alice's current value now.
    rep = store.review.import_labels("s", tmp_path / "edited.csv", "alice")
    assert (rep.annotations_added, rep.already_current) == (0, 1)


def test_edited_export_number_and_note_edits(store, tmp_path):
    ids = _faces(store)
    rows = _export(store, tmp_path)
    by_id = {int(r["face_id"]): r for r in rows}
    by_id[ids[2]]["valence"] = "0.75"
    by_id[ids[4]]["note"] = "occluded"
    by_id[ids[5]]["engagement"] = "0.33"
    by_id[ids[1]]["valence"] = by_id[ids[1]]["valence"] + "000"  # 0.4 -> 0.4000: the same number
    rep = store.review.import_labels("s", _save(tmp_path / "x.csv", rows), "dana")
    assert rep.annotations_added == 3
    assert store.recordings.face(ids[2]).valence == 0.75 and store.recordings.face(ids[2]).valence_source == "human"
    assert store.recordings.face(ids[4]).note == "occluded" and store.recordings.face(ids[4]).label_source == "model"
    assert store.recordings.face(ids[5]).engagement == 0.33
    assert store.recordings.face(ids[1]).valence_source == "model"


# ---------------------------------------------------------------------------------------------------- refusals


def test_duplicate_face_refuses_the_file_naming_both_lines(store, tmp_path):
    ids = _faces(store)
    f = _write(tmp_path / "d.csv", f"face_id,label\n{ids[0]},Anger\n{ids[1]},Fear\n{ids[0]},Fear\n")
    with pytest.raises(ImportLabelsError, match=f"face {ids[0]} is on lines 2 and 4") as err:
        store.review.import_labels("s", f, "alice")
    assert err.value.line == 4
    assert _count(store) == 0


BAD = [
    # (body, line, message); {a}, {b}: face ids of the study; a good row always comes first.
    ("face_id,label\n{a},Anger\n999999,Fear\n", 3, "face 999999 is not in study 's'"),
    ("face_id,label\n{a},Anger\n{b},Joy\n", 3, "invalid label 'Joy'"),
    ("face_id,label\n{a},Anger\ninf,Fear\n", 3, "face_id 'inf' is not a face id"),
    ("face_id,label\n{a},Anger\n1.9,Fear\n", 3, "face_id '1.9'"),
    ("face_id,label\n{a},Anger\nnan,Fear\n", 3, "face_id 'nan'"),
    ("face_id,label\n{a},Anger\n1e3,Fear\n", 3, "face_id '1e3'"),
    ("face_id,label\n{a},Anger\n ,Fear\n", 3, "face_id ' '"),
    ("face_id,label\n{a},Anger\n,Fear\n", 3, "face_id ''"),
    ("face_id,label\n{a},Anger\n{b}.0,Fear\n", 3, r"face_id '\d+\.0'"),
    ("face_id,label\n{a},Anger\n-{b},Fear\n", 3, "not a face id"),
    ("face_id,valence\n{a},0.5\n{b},nan\n", 3, "invalid valence 'nan': a decimal number"),
    ("face_id,valence\n{a},0.5\n{b},inf\n", 3, "invalid valence 'inf'"),
    ("face_id,arousal\n{a},0.5\n{b},-Infinity\n", 3, "invalid arousal '-Infinity'"),
    ("face_id,valence\n{a},0.5\n{b},1e999\n", 3, "invalid valence '1e999': a finite number"),
    ("face_id,valence\n{a},0.5\n{b},1_0\n", 3, "invalid valence '1_0'"),
    ("face_id,valence\n{a},0.5\n{b},1.5\n", 3, "invalid valence 1.5: a number from -1 to 1"),
    ("face_id,arousal\n{a},0.5\n{b},-2\n", 3, "invalid arousal -2.0"),
    ("face_id,engagement\n{a},0.66\n{b},0.5\n", 3, "EngageWild"),
    ("face_id,label\n{a},Anger\n{b},Fear,extra\n", 3, "the row has 3 fields and the header 2"),
    ("face_id,label,valence\n{a},Anger,0.1\n{b},Fear\n", 3, "the row has 2 fields and the header 3"),
    ("face_id,label\n{a},Anger\n\n{b},Joy\n", 4, "invalid label 'Joy'"),  # a blank line is skipped, still counted
    ('face_id,label,note\n{a},Anger,"two\nlines"\n{b},Joy,\n', 4, "invalid label 'Joy'"),
    ("face_id,label,note\n{a},Anger,ok\n{b},Fear," + "n" * 501 + "\n", 3, "at most 500 characters, this has 501"),
    ("face_id,label,note\n{a},Anger,ok\n{b},Fear," + "n" * 100_000 + "\n", 3, "this has 100000"),
    ("face_id,label,Label\n{a},Anger,Fear\n", 1, "column 'label' is in the header twice"),
    ("face_id,label,colour\n{a},Anger,red\n", 1, "unknown column 'colour'"),
    ("face_id,label,\n{a},Anger,\n", 1, "empty column name"),
    ("face_id,label,label_source\n{a},Anger,model\n", 1, "'label_source' is an export column"),
    ("face_id,label,valence,exported_label\n{a},Anger,0.1,Fear\n", 1, "'valence' has no 'exported_valence'"),
    ("face_id,label,exported_label\n{a},Anger,Fear\n{b},,Fear\n", 3, "label was emptied"),
    ("face_id,valence,exported_valence\n{a},0.1,0.2\n{b},0.1,abc\n", 3, "exported_valence 'abc' is not a number"),
    ("", 1, "the file is empty"),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD, ids=[f"{i}:{b[2][:30]}" for i, b in enumerate(BAD)])
def test_bad_input_refuses_the_whole_file(store, tmp_path, body, line, message):
    ids = _faces(store)
    store.review.correct_face(ids[2], "alice", label="Fear")
    before = _count(store)
    f = _write(tmp_path / "bad.csv", body.format(a=ids[0], b=ids[1]))
    with pytest.raises(ImportLabelsError, match=message) as err:
        store.review.import_labels("s", f, "alice")
    assert err.value.line == line
    assert str(err.value).startswith(f"bad.csv:{line}: ") and "nothing of bad.csv was applied" in str(err.value)
    assert _count(store) == before


def test_limits_are_inclusive(store, tmp_path):
    ids = _faces(store)
    note = "n" * label_import.MAX_NOTE
    body = f"face_id,valence,arousal,engagement,note\n{ids[0]},-1,1,0.66,{note}\n {ids[1]} ,+.5,-1e-1,1.0,\n"
    rep = store.review.import_labels("s", _write(tmp_path / "ok.csv", body), "alice")
    assert rep.annotations_added == 2
    assert store.recordings.face(ids[0]).note == note and store.recordings.face(ids[1]).arousal == pytest.approx(-0.1)


def test_write_refuses_a_context_that_changed_since_it_was_read(store, tmp_path):
    ids = _faces(store)
    f = label_import.read_file(_write(tmp_path / "a.csv", f"face_id,label\n{ids[0]},Anger\n"))
    ctx = store.transaction(lambda s: label_import.load_context(s, "s", "alice"), write=False)
    plan = label_import.plan_votes(f, ctx)
    store.review.correct_face(ids[0], "alice", label="Anger")
    with pytest.raises(label_import.StaleContextError):
        store.transaction(lambda s: label_import.write_votes(s, plan, ctx, source="test"))
    assert _count(store) == 1
    # The service plans again: alice's Anger is current now, so the file adds nothing.
    assert store.review.import_labels("s", tmp_path / "a.csv", "alice").annotations_added == 0
