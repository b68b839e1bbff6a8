"""The Review page through AppTest: the queue, one key per class, V/A and engagement, whole track, undo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apphelpers import new_app, no_exception, page, store_for

pytestmark = pytest.mark.slow


def test_annotator_name_is_required_before_the_first_correction(multi_face_app_dir: Path) -> None:
    at = page(new_app(), "review")
    no_exception(at)
    assert any("Enter your name" in i.value for i in at.info)
    assert all(b.disabled for b in at.button if b.key and b.key.startswith("cls_"))
    store = store_for(multi_face_app_dir)
    assert store.history(face_id=store.faces("default")[0].face_id) == []


def test_correct_with_class_keys_then_undo(multi_face_app_dir: Path) -> None:
    at = new_app()
    at.run()
    at.text_input(key="w_annotator").input("bob").run()
    page(at, "review")
    no_exception(at)
    assert at.markdown[0].value.startswith("**1 of 5** in the queue")
    buttons = {b.key: b for b in at.button}
    # one button per class, with keyboard shortcuts 1..8
    assert [buttons[f"cls_{c}"].proto.shortcut for c in ("Anger", "Surprise")] == ["1", "8"]
    buttons["cls_Fear"].click().run()
    no_exception(at)
    assert any("class Fear" in s.value for s in at.success)
    assert at.markdown[0].value.startswith("**1 of 4** in the queue"), "the corrected face left bob's queue"
    store = store_for(multi_face_app_dir)
    human = [f for f in store.faces("default") if f.label_source == "human"]
    assert [(f.label, f.judgements[0].annotator) for f in human] == [("Fear", "bob")]

    at.button(key="undo").click().run()
    no_exception(at)
    assert any("Undone" in s.value for s in at.success)
    assert not [f for f in store.faces("default") if f.label_source == "human"]
    kinds = [r.kind for r in store.history(face_id=human[0].face_id)]
    assert kinds == ["set", "undo"], "undo is a new row; nothing is overwritten"


def test_valence_arousal_engagement_and_note(multi_face_app_dir: Path) -> None:
    at = new_app()
    at.run()
    at.text_input(key="w_annotator").input("carol").run()
    page(at, "review")
    face_id = int(next(b.key for b in at.toggle if b.key.startswith("w_set_va_")).rsplit("_", 1)[1])
    at.toggle(key=f"w_set_va_{face_id}").set_value(True).run()
    at.slider(key=f"w_valence_{face_id}").set_value(0.5)
    at.slider(key=f"w_arousal_{face_id}").set_value(-0.25)
    at.segmented_control(key=f"w_engagement_{face_id}").set_value(0.66)
    at.text_input(key=f"w_note_{face_id}").input("looks away")
    at.run()
    at.button(key="cls_Neutral").click().run()
    no_exception(at)
    face = store_for(multi_face_app_dir).face(face_id)
    assert (face.label, face.valence, face.arousal, face.engagement, face.note) == (
        "Neutral", 0.5, -0.25, 0.66, "looks away")


def test_queue_orders(multi_face_app_dir: Path) -> None:
    at = page(new_app(), "review")
    at.radio(key="w_review_by").set_value("disagreement").run()
    no_exception(at)
    assert any("Nothing to review" in s.value for s in at.success)
