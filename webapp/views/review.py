"""Review: a queue of faces that most need a human look; correct with one key per class, per face or whole track."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db.rows import FaceLabel, ReviewItem
from models.errors import AffectLabError
from webapp import figures, services
from webapp.state import Keys, ui_state
from webapp.ui import Context, code_span, context, flash, show_flash

ORDERS = {
    "uncertainty": "Model unsure (lowest confidence, not yet labelled)",
    "disagreement": "Model and annotators disagree",
    "valence": "Valence contradicts the class",
}


def _keys(face_id: int) -> dict[str, str]:
    return {k: f"{v}_{face_id}" for k, v in (("set_va", Keys.SET_VA), ("valence", Keys.VALENCE),
                                            ("arousal", Keys.AROUSAL), ("engagement", Keys.ENGAGEMENT),
                                            ("note", Keys.NOTE), ("track", Keys.WHOLE_TRACK))}  # fmt: skip


def _extras(face_id: int) -> dict[str, object]:
    """The V/A, engagement and note the annotator set for this face (None for what they left alone)."""
    k = _keys(face_id)
    ss = st.session_state
    va = bool(ss.get(k["set_va"]))
    note = (ss.get(k["note"]) or "").strip() or None
    return {"valence": ss.get(k["valence"]) if va else None, "arousal": ss.get(k["arousal"]) if va else None,
            "engagement": ss.get(k["engagement"]), "note": note}  # fmt: skip


def _save(ctx: Context, face_id: int, track_id: int | None, label: str | None) -> None:
    """Callback of the class buttons and of Save: appends the correction (callbacks run before the page)."""
    if ctx.annotator is None:
        flash("warning", "Enter your name in the sidebar (Your name) before the first correction.")
        return
    extras = _extras(face_id)
    whole_track = bool(st.session_state.get(_keys(face_id)["track"])) and track_id is not None
    if label is None and all(v is None for v in extras.values()):
        flash("warning", "Nothing to save: choose a class, set valence/arousal or engagement, or write a note.")
        return
    try:
        target = {"track_id": track_id} if whole_track else {"face_id": face_id}
        row = services.correct(ctx.store, ctx.annotator, label=label, **target, **extras)  # type: ignore[arg-type]
    except (AffectLabError, ValueError) as exc:
        flash("error", f"Correction not stored: {exc}")
        return
    state = ui_state()
    state.undo_stack.append(row.id)
    what = ", ".join(f"{k} {v}" for k, v in (("class", label), *extras.items()) if v is not None)
    where = f"track {track_id} (every face without its own label)" if whole_track else f"face {face_id}"
    flash("success", f"Stored for {where}: {what}. Press U to undo.")


def _undo(ctx: Context) -> None:
    state = ui_state()
    if ctx.annotator is None or not state.undo_stack:
        flash("info", "Nothing to undo in this session.")
        return
    ann = state.undo_stack.pop()
    try:
        services.undo(ctx.store, ctx.annotator, ann)
    except AffectLabError as exc:
        flash("warning", f"Undo not possible: {exc}")
        return
    flash("success", f"Undone: correction {ann} (a new history row records the undo).")


def _skip(face_id: int, queue: list[int]) -> None:
    i = queue.index(face_id) if face_id in queue else -1
    ui_state().review_face = queue[(i + 1) % len(queue)] if queue else None


def _context_image(ctx: Context, face: FaceLabel) -> None:
    crop = services.face_crop(ctx.store, face.face_id)
    if crop is not None:
        st.image(crop, caption=f"face {face.face_id}", width=220)
    else:
        st.caption("No crop stored (features-only privacy mode).")
    if face.media_kind == "image" and ctx.media_dir is not None:
        media = next((m for m in services.study_media(ctx.store, ctx.study) if m.id == face.media_id), None)
        path = services.kept_media_file(ctx.media_dir, ctx.store, ctx.study, media) if media else None
        if path is not None:
            with st.expander("Whole image"):
                st.image(figures.draw_boxes(services.load_media_image(path), [figures.BoxLabel(face.box, 1)]))


def _history(ctx: Context, face: FaceLabel) -> None:
    rows = ctx.store.history(face_id=face.face_id)
    if rows:
        with st.expander(f"History of this face ({len(rows)} rows)"):
            st.dataframe(pd.DataFrame([{"id": r.id, "when": r.created_at, "annotator": r.annotator, "kind": r.kind,
                                        "target": "track" if r.track_id is not None else "face", "label": r.label,
                                        "valence": r.valence, "arousal": r.arousal, "engagement": r.engagement,
                                        "note": r.note} for r in rows]), hide_index=True)  # fmt: skip


def _item(ctx: Context, item: ReviewItem, queue: list[int]) -> None:
    face = services.face_label(ctx.store, item.face_id)
    k = _keys(face.face_id)
    where = f"{face.time_s:.1f} s" if face.time_s is not None else "image"
    st.markdown(f"**{queue.index(item.face_id) + 1} of {len(queue)}** in the queue. File {code_span(face.filename)}, "
                f"{where}. Why: {item.reason}.")  # fmt: skip
    left, right = st.columns([2, 3])
    with left:
        _context_image(ctx, face)
    with right:
        if face.model_probs:
            st.plotly_chart(figures.probability_bar(face.model_probs, f"{face.model}: class probabilities",
                                                    face.human_label), key=f"rbar_{face.face_id}")  # fmt: skip
        current = f"**{face.label}** ({face.label_source})" if face.label else "none"
        st.markdown(f"Current label: {current}")
    disabled = ctx.annotator is None
    if disabled:
        st.info("Enter your name in the sidebar (Your name) to correct.")
    if face.track_id is not None:
        st.toggle(f"Apply to the whole track {face.track_index}", key=k["track"],
                  help="The correction then holds for every face of this person's track without its own label.")
    st.markdown("**Class** (press the number key)")
    classes = services.class_names(face)
    cols = st.columns(len(classes))
    for i, (col, cls) in enumerate(zip(cols, classes, strict=True)):
        col.button(cls, key=f"cls_{cls}", shortcut=str(i + 1) if i < 9 else None, on_click=_save,
                   args=(ctx, face.face_id, face.track_id, cls), disabled=disabled, width="stretch",
                   type="primary" if cls == face.label else "secondary")  # fmt: skip
    with st.expander("Valence/arousal, engagement, note", expanded=face.model_valence is not None):
        va = st.toggle("Set valence and arousal", key=k["set_va"])
        c1, c2 = st.columns(2)
        c1.slider("Valence (negative to positive)", -1.0, 1.0, float(face.valence or 0.0), 0.05, key=k["valence"],
                  disabled=not va)  # fmt: skip
        c2.slider("Arousal (calm to excited)", -1.0, 1.0, float(face.arousal or 0.0), 0.05, key=k["arousal"],
                  disabled=not va)  # fmt: skip
        st.segmented_control("Engagement level (EngageWild)", list(services.ENGAGEMENT_LEVELS), key=k["engagement"],
                             format_func=lambda v: services.ENGAGEMENT_NAMES[v])  # fmt: skip
        st.text_input("Note", key=k["note"], max_chars=500)
        st.button("Save without changing the class", key="save_extras", on_click=_save,
                  args=(ctx, face.face_id, face.track_id, None), disabled=disabled, shortcut="S")  # fmt: skip
    b1, b2, _ = st.columns([1, 1, 4])
    b1.button("Skip", key="skip", shortcut="N", on_click=_skip, args=(face.face_id, queue), icon=":material/skip_next:")
    b2.button("Undo", key="undo", shortcut="U", on_click=_undo, args=(ctx,), icon=":material/undo:",
              disabled=not ui_state().undo_stack)  # fmt: skip
    _history(ctx, face)


def render() -> None:
    """The Review page."""
    ctx = context()
    st.title("Review")
    st.caption(f"Correct the model where it is most likely wrong. Study {code_span(ctx.study)}; corrections are "
               "appended to the history, never overwrite the model's prediction.")  # fmt: skip
    show_flash()
    state = ui_state()
    by = st.radio("Queue", list(ORDERS), format_func=ORDERS.__getitem__, horizontal=True, key=Keys.REVIEW_BY,
                  index=list(ORDERS).index(state.review_by))  # fmt: skip
    state.review_by = by
    items = services.review_queue(ctx.store, ctx.study, by, ctx.annotator)
    if not items:
        st.success("Nothing to review in this queue. Analyze more files, or choose another queue.")
        if state.undo_stack:
            st.button("Undo my last correction", key="undo", shortcut="U", on_click=_undo, args=(ctx,),
                      icon=":material/undo:")
        return
    queue = [i.face_id for i in items]
    current = next((i for i in items if i.face_id == state.review_face), items[0])
    _item(ctx, current, queue)


render()
