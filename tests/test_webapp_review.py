"""The Review page through AppTest: the queue per annotator, class keys, stored skips, undo, reloads, independent
labelling with two annotators, the track strip with an exception, and the browse view of one's own labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apphelpers import new_app, no_exception, page, store_for, use_folders

pytestmark = pytest.mark.slow


def _as(name: str, *, query: dict[str, str] | None = None) -> AppTest:
    """A new browser session on the Review page, with ``name`` typed in (or brought back by the URL ``query``)."""
    at = new_app()
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if name and not query:
        at.text_input(key="w_annotator").input(name).run()
    return page(at, "review")


def _counts(at: AppTest) -> str:
    return next(m.value for m in at.markdown if " left** in " in m.value)


def _face_on_screen(at: AppTest) -> int:
    line = next(m.value for m in at.markdown if re.search(r"\bFace \d+, file", m.value))
    return int(re.search(r"\bFace (\d+), file", line).group(1))


def _btn(at: AppTest, name: str):
    """The button ``name`` of the face on screen (its key ends with the face's showing number)."""
    found = [b for b in at.button if b.key and re.fullmatch(rf"{re.escape(name)}_\d+", b.key)]
    assert len(found) == 1, [b.key for b in at.button]
    return found[0]


def test_the_plain_address_asks_for_a_name_before_any_queue(multi_face_app_dir: Path) -> None:
    at = page(new_app(), "review")
    no_exception(at)
    assert any("Who is labelling?" in i.value for i in at.info)
    assert not [b for b in at.button if b.key and b.key.startswith("cls_")], "no queue without a name"
    assert not any("Nothing left" in s.value for s in at.success), "an empty name never reads as all done"
    store = store_for(multi_face_app_dir)
    assert store.recordings.history(face_id=store.recordings.faces("default")[0].face_id) == []
    at.text_input(key="w_name_prompt").input("Hana")
    at.button[0].click()  # the form's Start labelling
    at.run()
    no_exception(at)
    assert at.text_input(key="w_annotator").value == "Hana", "the sidebar shows the name"
    assert _counts(at).startswith("**5 of 5 left** in the study for you")


def test_one_person_whatever_the_case_and_spaces(multi_face_app_dir: Path) -> None:
    at = _as("alice")
    first = _face_on_screen(at)
    _btn(at, "cls_Fear").click().run()
    again = _as(" ALICE ")  # another day, another spelling: the same queue, not a second opinion
    no_exception(again)
    assert _counts(again).startswith("**4 of 5 left**")
    assert any("Labelling as `alice`" in c.value for c in again.sidebar.caption)
    _btn(again, "undo").click().run()
    no_exception(again)
    assert _face_on_screen(again) == first, "her undo finds her vote"
    store = store_for(multi_face_app_dir)
    assert [(r.annotator, r.kind) for r in store.recordings.history(face_id=first)] == [
        ("alice", "set"),
        ("alice", "undo"),
    ]


def test_a_stale_or_repeated_key_stores_nothing(multi_face_app_dir: Path) -> None:
    """A key that reaches the controls of a face no longer on screen (a double press, a key pressed while the next
    face was drawn) is refused: the callback carries the face and showing it was drawn with."""
    at = _as("ivan")
    first = _face_on_screen(at)
    stale = _btn(at, "cls_Anger")
    stale_skip = _btn(at, "skip")
    _btn(at, "cls_Fear").click().run()
    second = _face_on_screen(at)
    assert second != first
    store = store_for(multi_face_app_dir)
    before = [
        (r.face_id, r.label)
        for f in store.recordings.faces("default")
        for r in store.recordings.history(face_id=f.face_id)
    ]
    # the first face's buttons, pressed again after the next face came up (what a double press does)
    for old in (stale, stale_skip):
        states = at._tree.get_widget_states()  # what the browser sends: the old button's trigger
        states.widgets.add(id=old.id, trigger_value=True)
        at._run(states)
        no_exception(at)
        assert _face_on_screen(at) == second, "the face on screen stays"
    after = [
        (r.face_id, r.label)
        for f in store.recordings.faces("default")
        for r in store.recordings.history(face_id=f.face_id)
    ]
    assert after == before == [(first, "Fear")]
    assert _counts(at).startswith("**4 of 5 left**"), "no skip either"


def test_a_filter_replaces_the_face_on_screen_and_the_counts_name_it(tmp_path: Path, monkeypatch, random_weights_dir):
    from tests.pg import fake_results, png_bytes

    data = tmp_path / "data"
    use_folders(monkeypatch, data, random_weights_dir)
    store = store_for(data)
    store.upgrade()
    boxes = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]
    for seed, name in ((1, "a.png"), (2, "b.png")):
        store.ingest.ingest_results("default", png_bytes(seed), name, fake_results(name, boxes, ["Fear", "Anger"]))
    b_faces = {f.face_id for f in store.recordings.faces("default") if f.filename == "b.png"}
    at = _as("jo")
    media = {m.filename: m.id for m in store.recordings.media("default")}
    while _face_on_screen(at) in b_faces:  # a face of a.png on screen
        _btn(at, "skip").click().run()
    at.selectbox(key="w_review_media").set_value(media["b.png"]).run()
    no_exception(at)
    assert _face_on_screen(at) in b_faces, "the face on screen matches the filter"
    assert _counts(at).startswith("**2 of 2 left** in `b.png` · ")
    assert " in the study" in _counts(at)
    _btn(at, "cls_Fear").click().run()
    _btn(at, "cls_Fear").click().run()
    no_exception(at)
    assert any("Nothing left in `b.png`" in s.value for s in at.success)


def test_correct_with_class_keys_then_undo_survives_a_reload(multi_face_app_dir: Path) -> None:
    at = _as("bob")
    no_exception(at)
    assert _counts(at).startswith("**5 of 5 left** in the study for you · 5 of 5 in this file")
    # one button per class, with keyboard shortcuts 1..8; nothing pre-selected for a face bob never labelled
    assert [_btn(at, f"cls_{c}").proto.shortcut for c in ("Anger", "Surprise")] == ["1", "8"]
    assert all(b.proto.type != "primary" for b in at.button if b.key and b.key.startswith("cls_"))
    first = _face_on_screen(at)
    _btn(at, "cls_Fear").click().run()
    no_exception(at)
    assert any("class Fear" in s.value for s in at.success)
    assert _counts(at).startswith("**4 of 5 left**"), "the corrected face left bob's queue"
    assert _face_on_screen(at) != first
    store = store_for(multi_face_app_dir)
    human = [f for f in store.recordings.faces("default") if f.label_source == "human"]
    assert [(f.face_id, f.label, f.judgements[0].annotator) for f in human] == [(first, "Fear", "bob")]

    # Undo belongs to the person, not the tab: a new browser session (a reload) undoes bob's latest correction.
    at = _as("", query=dict(at.query_params))
    assert at.text_input(key="w_annotator").value == "bob", "the name came back from the URL"
    _btn(at, "undo").click().run()
    no_exception(at)
    assert any("Undone" in s.value for s in at.success)
    assert _face_on_screen(at) == first, "the undone face is shown again"
    assert not [f for f in store.recordings.faces("default") if f.label_source == "human"]
    assert [r.kind for r in store.recordings.history(face_id=first)] == ["set", "undo"], "undo is a new row"


def test_confirming_the_model_class_is_a_human_vote(multi_face_app_dir: Path) -> None:
    at = _as("carol")
    face_id = _face_on_screen(at)
    store = store_for(multi_face_app_dir)
    predicted = store.recordings.face(face_id).model_label
    _btn(at, f"cls_{predicted}").click().run()
    no_exception(at)
    face = store.recordings.face(face_id)
    assert (face.label, face.label_source, face.label_annotators) == (predicted, "human", 1)


def test_skip_is_kept_across_a_reload_and_can_be_undone(multi_face_app_dir: Path) -> None:
    at = _as("dora")
    skipped = _face_on_screen(at)
    _btn(at, "skip").click().run()
    no_exception(at)
    assert _counts(at).startswith("**4 of 5 left** in the study for you · 4 of 5 in this file · 1 skipped.")
    assert _face_on_screen(at) != skipped
    query = dict(at.query_params)
    assert query.get("annotator") == "dora"

    again = _as("", query=query)  # a reload: a new session, the URL kept
    no_exception(again)
    assert again.text_input(key="w_annotator").value == "dora"
    assert "· 1 skipped." in _counts(again) and _face_on_screen(again) != skipped
    other = _as("erik")
    assert _counts(other).startswith("**5 of 5 left**"), "skips are per annotator"
    # the skipped face comes back on request
    for _ in range(4):
        _btn(again, "skip").click().run()
    assert any("Nothing left" in s.value for s in again.success)
    again.button(key="unskip").click().run()
    no_exception(again)
    assert _counts(again).startswith("**5 of 5 left**")


def test_queue_order_and_filters_survive_a_reload(multi_face_app_dir: Path) -> None:
    at = _as("fay")
    at.selectbox(key="w_review_by").set_value("disagreement").run()
    no_exception(at)
    assert any("Nothing left" in s.value for s in at.success)
    query = dict(at.query_params)
    assert query.get("queue") == "disagreement"
    again = _as("", query=query)
    assert again.selectbox(key="w_review_by").value == "disagreement"


def test_two_annotators_in_independent_mode(multi_face_app_dir: Path) -> None:
    from db.review import StudySettings

    store = store_for(multi_face_app_dir)
    store.review.set_study_settings("default", StudySettings(independent=True, hide_model=True, double_share=1.0))
    alice = _as("alice")
    face_id = _face_on_screen(alice)
    _btn(alice, "cls_Fear").click().run()
    no_exception(alice)

    bob = _as("bob")
    no_exception(bob)
    text = " ".join(m.value for m in bob.markdown)
    assert "Fear" not in text and "Current label of the study" not in text, "bob sees nothing of alice's vote"
    assert not any("class probabilities" in c.value for c in bob.caption), "the model's prediction is hidden too"
    assert not any("| probability |" in m.value for m in bob.markdown)
    # bob reaches the same face (every face needs two votes with a share of 100 %)
    while _face_on_screen(bob) != face_id:
        _btn(bob, "skip").click().run()
    assert all(b.proto.type != "primary" for b in bob.button if b.key and b.key.startswith("cls_"))
    _btn(bob, "cls_Fear").click().run()
    no_exception(bob)
    face = store.recordings.face(face_id)
    assert sorted(j.annotator for j in face.judgements) == ["alice", "bob"]
    assert (face.label, face.label_annotators, face.label_agreement) == ("Fear", 2, 1.0)
    assert store.exports.stats("default").counts["annotators"] == 2


def test_track_strip_applies_to_the_whole_track_with_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    from tests.pg import fake_results, png_bytes

    data = tmp_path / "data"
    use_folders(monkeypatch, data, random_weights_dir)
    store = store_for(data)
    store.upgrade()
    box = (10.0, 10.0, 50.0, 60.0)
    res = fake_results(
        "clip.mp4",
        [box] * 6,
        ["Neutral"] * 6,
        frames=list(range(0, 60, 10)),
        tracks=[0] * 6,
        confidence=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    )
    store.ingest.ingest_results("default", png_bytes(3), "clip.mp4", res)
    faces = sorted(store.recordings.faces("default"), key=lambda f: f.time_s)

    at = _as("gus")
    no_exception(at)
    assert any(m.value.startswith("**Track 0**: 6 faces") for m in at.markdown)
    assert sum(1 for b in at.button if b.key and b.key.startswith("strip_")) == 6
    at.selectbox(key=f"w_track_class_{faces[0].track_id}").set_value("Sadness").run()
    _btn(at, "apply_track").click().run()
    no_exception(at)
    assert all(store.recordings.face(f.face_id).label == "Sadness" for f in faces)
    assert any("Nothing left" in s.value for s in at.success), "the whole track left gus's queue"

    # an exception: open one face of the strip in "My labels" and give it its own class
    at.segmented_control(key="w_review_mode").set_value("mine").run()
    no_exception(at)
    at.button(key=f"strip_{faces[3].face_id}").click().run()
    assert _face_on_screen(at) == faces[3].face_id
    _btn(at, "cls_Happiness").click().run()
    no_exception(at)
    labels = [store.recordings.face(f.face_id).label for f in faces]
    assert labels == ["Sadness"] * 3 + ["Happiness"] + ["Sadness"] * 2
    captions = [c.value for c in at.caption]
    assert any("Happiness (own)" in c for c in captions) and any("Sadness (track)" in c for c in captions)
    # My labels counts the faces labelled directly and through the track apart, and shows the edit at once
    (mine,) = [sb for sb in at.selectbox if sb.key and sb.key.startswith("w_review_mine_")]
    assert mine.label.startswith("You labelled 1 face yourself and 5 faces through 1 track label")
    assert mine.options[3].startswith(f"face {faces[3].face_id} · clip.mp4 · ") and mine.options[3].endswith(
        "Happiness"
    )
    assert "Sadness (track)" in mine.options[0]


def test_a_long_tracks_strip_resolves_only_the_faces_it_shows(tmp_path: Path) -> None:
    """The strip of a 60-face track: every face counted, at most STRIP_MAX shown (the current one among them), spread
    from the first to the last, each as the store resolves it; another study's track gives nothing."""
    from db.review import StudySettings
    from db.services import LabelStore
    from tests.pg import fake_results, png_bytes
    from webapp.services import review

    store = LabelStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    n = 60
    res = fake_results(
        "clip.mp4", [(10.0, 10.0, 50.0, 60.0)] * n, ["Neutral"] * n, frames=list(range(n)), tracks=[0] * n
    )
    store.ingest.ingest_results("s", png_bytes(3), "clip.mp4", res)
    store.ingest.ingest_results(
        "t", png_bytes(4), "other.png", fake_results("other.png", [(1.0, 1.0, 30.0, 30.0)], ["Fear"])
    )
    faces = sorted(store.recordings.faces("s"), key=lambda f: (f.time_s or 0.0, f.face_id))
    current = faces[37]
    store.review.correct_face(faces[5].face_id, "ann", label="Anger")
    strip = review.track_strip(store, "s", current, "ann", StudySettings(), owner=True)
    assert strip is not None and strip.n_faces == n
    shown = [f.face_id for f in strip.shown]
    assert len(shown) <= review.STRIP_MAX and current.face_id in shown
    assert shown[0] == faces[0].face_id and shown[-1] == faces[-1].face_id
    assert shown == sorted(shown, key=[f.face_id for f in faces].index)  # in time order
    assert (strip.start_s, strip.end_s) == (faces[0].time_s, faces[-1].time_s)
    by_id = {f.face_id: f for f in faces}
    assert all(f == review.visible_face(store.recordings.face(f.face_id), "ann", StudySettings()) for f in strip.shown)
    assert all(by_id[f.face_id].track_id == current.track_id for f in strip.shown)
    assert store.recordings.track_face_times("t", current.track_id) == []  # another study's track: nothing
