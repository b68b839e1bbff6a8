"""Review: each annotator's queue of faces; one key per class, per face or whole track; skips and undo are stored.

The review panel is a fragment: a key press reruns only the panel, not the page (``AFFECTLAB_REVIEW_FRAGMENT=0``
turns that off, for the bench's comparison).

A vote names the face its annotator saw: every control of a face (class keys, Save, Apply to the track, Skip, Undo)
is drawn with the face's id and showing number (``UIState.review_shown``) in its key and its callback's arguments,
and :func:`_take` lets it act only while that pair is the one on screen, using it up. A key that reaches the previous
face's button while the next face is being drawn, or the second press of a double press, stores nothing and says so;
it is never passed on to the face that comes next.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.scriptrunner import get_script_run_ctx

from db.review import ReviewFilter, ReviewQueue, StudySettings
from db.rows import FaceLabel
from models.errors import AffectLabError
from webapp import figures
from webapp.services import library, review, studies
from webapp.state import Keys, UIState, set_widget_value, ui_state, widget_snapshot, widget_value
from webapp.ui import Context, code_span, context, flash, plural, remember_in_url, show_flash

ORDERS = {
    "uncertainty": "Needs a label (model least sure first)",
    "disagreement": "Model and annotators disagree",
    "valence": "Valence contradicts the class",
}
MODES = {"queue": "Queue", "mine": "My labels"}


def _keys(face_id: int) -> dict[str, str]:
    return {
        k: f"{v}_{face_id}"
        for k, v in (
            ("set_va", Keys.SET_VA),
            ("valence", Keys.VALENCE),
            ("arousal", Keys.AROUSAL),
            ("engagement", Keys.ENGAGEMENT),
            ("note", Keys.NOTE),
            ("track", Keys.WHOLE_TRACK),
        )
    }


def _extras(face_id: int) -> dict[str, float | str | None]:
    """The V/A, engagement and note the annotator set for this face (None for what they left alone)."""
    k = _keys(face_id)
    va = bool(widget_value(k["set_va"]))
    note = (widget_value(k["note"]) or "").strip() or None
    return {
        "valence": widget_value(k["valence"]) if va else None,
        "arousal": widget_value(k["arousal"]) if va else None,
        "engagement": widget_value(k["engagement"]),
        "note": note,
    }


def _number(value: float | str | None) -> float | None:
    return None if value is None else float(value)


NO_FACE = 0
"""The face id of the empty queue's showing (face ids start at 1)."""


def _live(face_id: int) -> tuple[int, int]:
    """The ``(face, showing)`` the controls of ``face_id`` are drawn with: a new showing unless it is still live."""
    state = ui_state()
    if state.review_shown is None or state.review_shown[0] != face_id:
        state.review_showing += 1
        state.review_shown = (face_id, state.review_showing)
    return state.review_shown


def _take(shown: tuple[int, int]) -> bool:
    """Whether an action drawn with ``shown`` may act now; it uses the showing up (see the module's docstring).

    A stale action stores nothing and leaves a message for the panel.
    """
    state = ui_state()
    state.review_acted = True
    if state.review_shown != shown:
        what = f"face {shown[0]}" if shown[0] != NO_FACE else "the empty queue"
        before = f"Stored last: {state.review_last}. " if state.review_last else ""  # its message was replaced
        flash(
            "info",
            f"{before}A key for {what}, no longer on screen (a double press, or too early), was dropped: nothing "
            "stored. Press again for the face shown.",
        )
        return False
    state.review_shown = None
    return True


def _save(
    ctx: Context,
    shown: tuple[int, int],
    track_id: int | None,
    label: str | None,
    whole_track: bool | None = None,
) -> None:
    """Callback of the class buttons, Save and Apply to the track: appends the correction (runs before the panel)."""
    if ctx.annotator is None:
        flash("warning", "Enter your name before the first correction.")
        return
    if not _take(shown):
        return
    face_id = shown[0]
    extras: dict[str, float | str | None] = _extras(face_id) if whole_track is None else {}
    if whole_track is None:
        whole_track = bool(widget_value(_keys(face_id)["track"]))
    whole_track = whole_track and track_id is not None
    if label is None and all(v is None for v in extras.values()):
        flash("warning", "Nothing to save: choose a class, set valence/arousal or engagement, or write a note.")
        return
    try:
        note = extras.get("note")
        review.correct(
            ctx.store,
            ctx.annotator,
            face_id=None if whole_track else face_id,
            track_id=track_id if whole_track else None,
            label=label,
            valence=_number(extras.get("valence")),
            arousal=_number(extras.get("arousal")),
            engagement=_number(extras.get("engagement")),
            note=None if note is None else str(note),
        )
    except AffectLabError as exc:
        flash("error", f"Correction not stored: {code_span(str(exc))}")
        return
    state = ui_state()
    if state.review_mode == "queue":
        state.review_face = None  # the labelled face left the queue: the next one comes up
    what = ", ".join(f"{k} {v}" for k, v in (("class", label), *extras.items()) if v is not None)
    where = "the whole track (every face without its own label)" if whole_track else f"face {face_id}"
    state.review_last = f"{where}: {what}"
    flash("success", f"Stored for {where}: {what}. Press U to undo.")


def _undo(ctx: Context, shown: tuple[int, int]) -> None:
    if ctx.annotator is None:
        flash("info", "Enter your name to undo your corrections.")
        return
    if not _take(shown):
        return
    try:
        row = review.undo_last(ctx.store, ctx.study, ctx.annotator)
    except AffectLabError as exc:
        flash("warning", f"Undo not possible: {code_span(str(exc))}")
        return
    if row is None:
        flash("info", f"{code_span(ctx.annotator)} has no correction to undo in this study.")
        return
    if row.face_id is not None:
        _open(row.face_id)
    target = f"face {row.face_id}" if row.face_id is not None else f"track {row.track_id}"
    flash("success", f"Undone: your latest correction of {target} (a new history row records the undo).")


def _skip(ctx: Context, shown: tuple[int, int]) -> None:
    if not _take(shown):
        return
    face_id = shown[0]
    try:
        review.skip(ctx.store, ctx.annotator, face_id)
    except AffectLabError as exc:
        flash("warning", f"Not skipped: {code_span(str(exc))}")
        return
    ui_state().review_face = None
    flash("info", f"Skipped face {face_id}: it stays out of your queue, also after a reload.")


def _unskip(ctx: Context) -> None:
    ui_state().review_acted = True
    if ctx.annotator:
        n = review.unskip_all(ctx.store, ctx.study, ctx.annotator)
        flash("info", f"{plural(n, 'skipped face')} back in your queue.")


MINE_PAGE = 200
"""Faces per page of "My labels" (a keyset page: only they are read)."""


def _mine_page(after: int | None) -> None:
    ui_state().review_acted = True
    ui_state().review_mine_after = after
    ui_state().review_face = None


def _open(face_id: int) -> None:
    ui_state().review_acted = True
    ui_state().review_face = face_id  # the browse list's key holds the face: its choice follows


def _study_rules(ctx: Context) -> StudySettings:
    """The study's labelling rules; owners can change them here."""
    rules = studies.study_settings(ctx.store, ctx.study)
    if not ctx.owner:
        return rules
    with st.expander("Labelling rules of this study (owners)"):
        independent = st.toggle(
            "Independent labelling: annotators do not see each other's labels",
            value=rules.independent,
            key=Keys.STUDY_INDEPENDENT,
        )
        hide_model = st.toggle(
            "Hide the model's prediction from annotators too",
            value=rules.hide_model,
            key=Keys.STUDY_HIDE_MODEL,
            disabled=not independent,
        )
        share = st.slider(
            "Share of faces labelled by a second annotator (for agreement)",
            0,
            100,
            round(rules.double_share * 100),
            5,
            key=Keys.STUDY_DOUBLE_SHARE,
            format="%d %%",
        )
        blur = st.toggle(
            "Blur faces for everyone but the owners (privacy for minors; an annotator still sees the "
            "face being labelled, and the video player is hidden)",
            value=rules.blur_faces,
            key=Keys.STUDY_BLUR_FACES,
        )
        new = StudySettings(
            independent=independent, hide_model=hide_model and independent, double_share=share / 100, blur_faces=blur
        )
        if new != rules:
            try:
                rules = studies.set_study_settings(ctx.store, ctx.study, new, owner=ctx.owner)
            except AffectLabError as exc:
                st.error(code_span(str(exc)))
    return rules


def _filters(ctx: Context, state: UIState, rules: StudySettings, where: DeltaGenerator) -> tuple[ReviewFilter, str]:
    """The filter widgets (in ``where``); returns the filter and its description for the counts ("" for none)."""
    media = studies.study_media(ctx.store, ctx.study)
    names = {m.id: m.filename for m in media}
    may_see_votes = not rules.independent  # blind for everyone in Review; owners see agreement on Dataset
    classes = ["", *review.class_names()]
    with where.popover("Filters", icon=":material/filter_list:", width="stretch"):
        ids = [None, *names]
        state.review_media = st.selectbox(
            "File",
            ids,
            index=ids.index(state.review_media) if state.review_media in ids else 0,
            format_func=lambda i: "all files" if i is None else names[i],
            key=Keys.REVIEW_MEDIA,
        )
        tracks = (
            studies.media_tracks(ctx.store, state.review_media, ctx.study, with_windows=False)
            if state.review_media in names
            else []
        )
        index = {t.id: t.track_index for t in tracks}
        if tracks:
            tids = [None, *index]
            state.review_track = st.selectbox(
                "Track",
                tids,
                index=tids.index(state.review_track) if state.review_track in tids else 0,
                format_func=lambda t: "all tracks" if t is None else f"track {index[t]}",
                key=Keys.REVIEW_TRACK,
            )
        else:
            state.review_track = None
        if not (rules.hide_model and rules.independent):
            state.review_model_label = st.selectbox(
                "Model's class",
                classes,
                index=classes.index(state.review_model_label) if state.review_model_label in classes else 0,
                format_func=lambda c: c or "any",
                key=Keys.REVIEW_MODEL_LABEL,
            )
        if may_see_votes:
            state.review_human_label = st.selectbox(
                "Human class",
                classes,
                index=classes.index(state.review_human_label) if state.review_human_label in classes else 0,
                format_func=lambda c: c or "any",
                key=Keys.REVIEW_HUMAN_LABEL,
            )
            opts = ["", "yes", "no"]
            state.review_labelled = st.selectbox(
                "Labelled",
                opts,
                index=opts.index(state.review_labelled) if state.review_labelled in opts else 0,
                format_func={"": "either", "yes": "has a human label", "no": "no human label"}.__getitem__,
                key=Keys.REVIEW_LABELLED,
            )
            state.review_labelled_by = st.text_input(
                "Labelled by (annotator)", value=state.review_labelled_by, key=Keys.REVIEW_LABELLED_BY, max_chars=200
            ).strip()
    flt = ReviewFilter(
        media_id=state.review_media,
        track_id=state.review_track if state.review_track in index else None,
        model_label=state.review_model_label or None,
        human_label=(state.review_human_label or None) if may_see_votes else None,
        labelled={"yes": True, "no": False}.get(state.review_labelled) if may_see_votes else None,
        # the person the typed name stands for (capitals and spaces do not count)
        labelled_by=ctx.store.review.annotator_name(state.review_labelled_by)
        if may_see_votes and state.review_labelled_by
        else None,
    )
    parts = []
    if flt.media_id is not None and flt.media_id in names:
        parts.append(code_span(names[flt.media_id]))
    if flt.track_id is not None:
        parts.append(f"track {index[flt.track_id]}")
    if flt.model_label:
        parts.append(f"model's class {flt.model_label}")
    if flt.human_label:
        parts.append(f"human class {flt.human_label}")
    if flt.labelled is not None:
        parts.append("labelled faces" if flt.labelled else "faces without a human label")
    if flt.labelled_by:
        parts.append(f"labelled by {code_span(flt.labelled_by)}")
    return flt, ", ".join(parts)


@st.cache_data(show_spinner=False, max_entries=64)
def _frame(
    path: str,
    mtime: float,
    time_s: float,
    box: tuple[float, float, float, float],
    blur: tuple[tuple[float, float, float, float], ...] = (),
) -> Image.Image:
    """The frame with the face's box; the boxes in ``blur`` (the other faces, for a viewer who sees them blurred)."""
    del mtime  # part of the cache key only
    return figures.draw_boxes(library.video_frame(Path(path), time_s, blur), [figures.BoxLabel(box, 1)])


def _history(ctx: Context, face: FaceLabel, rules: StudySettings) -> None:
    rows = review.face_history(ctx.store, face, ctx.annotator, rules)
    if rows:
        with st.expander(f"History of this face ({plural(len(rows), 'row')})"):
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "id": r.id,
                            "when": r.created_at,
                            "annotator": r.annotator,
                            "kind": r.kind,
                            "target": "track" if r.track_id is not None else "face",
                            "label": r.label,
                            "valence": r.valence,
                            "arousal": r.arousal,
                            "engagement": r.engagement,
                            "note": r.note,
                        }
                        for r in rows
                    ]
                ),
                hide_index=True,
            )


def _crop(ctx: Context, face: FaceLabel, shown: review.FaceContext) -> None:
    if shown.crop is not None:
        st.image(shown.crop, caption=f"face {face.face_id}", width=170)
    else:
        st.caption("No crop stored (features-only privacy mode).")


def _context_image(face: FaceLabel, shown: review.FaceContext) -> None:
    path = shown.path
    if path is None:
        return
    try:
        if face.media_kind == "video" and face.time_s is not None:
            st.image(
                _frame(str(path), path.stat().st_mtime, float(face.time_s), face.box, shown.blur),
                caption=f"the frame at {face.time_s:.1f} s",
            )
        elif face.media_kind == "image":
            with st.expander("Whole image"):
                image = library.load_media_image(path, shown.blur)
                st.image(figures.draw_boxes(image, [figures.BoxLabel(face.box, 1)]))
    except AffectLabError as exc:
        st.caption(f"The frame cannot be shown: {code_span(str(exc))}")


def _track_strip(ctx: Context, face: FaceLabel, rules: StudySettings, live: tuple[int, int]) -> None:
    """The faces of the current face's track, with the annotator's label of each, and Apply to the whole track."""
    strip = review.track_strip(ctx.store, ctx.study, face, ctx.annotator, rules, ctx.owner)
    if strip is None:
        return
    shown, crops = strip.shown, strip.crops
    span = f"{strip.start_s:.1f}-{strip.end_s:.1f} s"
    with st.container(border=True):
        st.markdown(
            f"**Track {face.track_index}**: {plural(strip.n_faces, 'face')}, {span}. A track label holds for "
            "each face without its own label; open a face below to give it its own (an exception)."
        )
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        classes = review.class_names(face)
        cls = c1.selectbox(
            "Class for the whole track",
            classes,
            key=f"{Keys.TRACK_CLASS}_{face.track_id}",
            index=None,  # nothing chosen for the person: one careless click must not label a whole track
            placeholder="choose a class",
            disabled=ctx.annotator is None,
        )
        c2.button(
            "Apply to the whole track",
            key=f"{Keys.APPLY_TRACK}_{live[1]}",
            on_click=_save,
            icon=":material/done_all:",
            args=(ctx, live, face.track_id, cls, True),
            disabled=ctx.annotator is None or cls is None,
        )
        per_row = 8
        for start in range(0, len(shown), per_row):
            cols = st.columns(per_row)
            for col, f in zip(cols, shown[start : start + per_row], strict=False):
                mine = next((j for j in f.judgements if j.annotator == ctx.annotator), None)
                if mine is not None and mine.label is not None:
                    tag = f"{mine.label} ({'track' if 'label' in mine.from_track else 'own'})"
                else:
                    tag = "-"
                with col:
                    if f.face_id in crops:
                        st.image(crops[f.face_id], width=72)
                    here = " (here)" if f.face_id == face.face_id else ""
                    st.caption(f"{f.time_s or 0:.1f} s · {tag}{here}")
                    st.button(
                        "Open",
                        key=f"{Keys.STRIP_OPEN}_{f.face_id}",
                        on_click=_open,
                        args=(f.face_id,),
                        disabled=f.face_id == face.face_id,
                        width="stretch",
                    )


CLASSES_PER_ROW = 4
"""Class buttons per row: two rows of four keep whole class names readable at 1280 px."""


def _item(ctx: Context, face_id: int, rules: StudySettings, where_line: str, reason: str | None) -> None:
    """The face under review: crop and class keys side by side above the fold, the context below."""
    face = review.face_for_review(ctx.store, ctx.study, face_id, ctx.annotator, rules)
    live = _live(face.face_id)
    mine = next((j for j in face.judgements if j.annotator == ctx.annotator), None)
    k = _keys(face.face_id)
    where = f"{face.time_s:.1f} s" if face.time_s is not None else "image"
    why = f" Why: {reason}." if reason else ""
    st.markdown(f"{where_line}  \nFace {face.face_id}, file {code_span(face.filename)}, {where}.{why}")
    shown = review.face_context(ctx.store, ctx.study, face, rules, ctx.owner, ctx.media_dir)
    disabled = ctx.annotator is None
    left, right = st.columns([1, 3])
    with left:
        _crop(ctx, face, shown)
    with right:
        your = (
            f"**{mine.label}**" + (" (your track label)" if "label" in mine.from_track else "")
            if mine is not None and mine.label
            else "none yet"
        )
        agreed = ""
        if not rules.independent:  # owners see the study's consensus on the Dataset page
            agreed = " · label of the study: " + (f"**{face.label}** ({face.label_source})" if face.label else "none")
        st.markdown(f"Class: press its number key (the model's class confirms it). Your label: {your}{agreed}")
        classes = review.class_names(face)
        own_label = mine.label if mine is not None else None
        for start in range(0, len(classes), CLASSES_PER_ROW):
            cols = st.columns(CLASSES_PER_ROW)
            for col, (i, cls) in zip(
                cols, enumerate(classes[start : start + CLASSES_PER_ROW], start=start), strict=False
            ):
                col.button(
                    cls,
                    key=f"{Keys.REVIEW_CLASS}_{cls}_{live[1]}",
                    shortcut=str(i + 1) if i < 9 else None,
                    on_click=_save,
                    args=(ctx, live, face.track_id, cls),
                    disabled=disabled,
                    width="stretch",
                    type="primary" if cls == own_label else "secondary",
                )
        b1, b2, b3 = st.columns([1, 1, 2], vertical_alignment="center")
        if ui_state().review_mode == "queue":
            b1.button(
                "Skip",
                key=f"{Keys.SKIP}_{live[1]}",
                shortcut="N",
                on_click=_skip,
                args=(ctx, live),
                icon=":material/skip_next:",
                disabled=disabled,
                width="stretch",
            )
        b2.button(
            "Undo",
            key=f"{Keys.UNDO}_{live[1]}",
            shortcut="U",
            on_click=_undo,
            args=(ctx, live),
            icon=":material/undo:",
            disabled=disabled,
            width="stretch",
        )
        if face.track_id is not None:
            b3.toggle(
                f"Apply to the whole track {face.track_index}",
                key=k["track"],
                help="The correction then holds for every face of this person's track without its own label.",
            )
    if disabled:
        st.info("Enter your name to correct.")
    c1, c2 = st.columns([1, 1])
    with c1:
        if face.model_probs:
            st.caption(f"{face.model}: class probabilities")
            if face.model_reused:
                st.caption(
                    "Reused: the model classified an earlier frame of this track whose face barely differs from this "
                    "one (box within 5 %, pixels within 2 grey levels on average); these are that face's probabilities."
                )
            st.markdown(figures.probability_table(face.model_probs, own_label))
        elif rules.hide_model:
            st.caption("The model's prediction is hidden in this study (independent labelling).")
    with c2:
        _context_image(face, shown)
    with st.expander("Valence/arousal, engagement, note", expanded=face.model_valence is not None):
        va = st.toggle("Set valence and arousal", key=k["set_va"])
        c1, c2 = st.columns(2)
        c1.slider(
            "Valence (negative to positive)",
            -1.0,
            1.0,
            float(face.valence or 0.0),
            0.05,
            key=k["valence"],
            disabled=not va,
        )
        c2.slider(
            "Arousal (calm to excited)", -1.0, 1.0, float(face.arousal or 0.0), 0.05, key=k["arousal"], disabled=not va
        )
        st.segmented_control(
            "Engagement level (EngageWild)",
            list(review.ENGAGEMENT_LEVELS),
            key=k["engagement"],
            format_func=lambda v: review.ENGAGEMENT_NAMES[v],
        )
        st.text_input("Note", key=k["note"], max_chars=500)
        st.button(
            "Save without changing the class",
            key=f"{Keys.SAVE_EXTRAS}_{live[1]}",
            on_click=_save,
            args=(ctx, live, face.track_id, None),
            disabled=disabled,
            shortcut="S",
        )
    _track_strip(ctx, face, rules, live)
    _history(ctx, face, rules)


def _counts(q: ReviewQueue, media_id: int | None, described: str, study: ReviewQueue | None) -> str:
    """The counts line, naming the filter: ``12 of 40 left in a.mp4 · 75 of 120 in the study``."""
    if described and study is not None:
        line = f"**{q.left} of {q.total} left** in {described} · {study.left} of {study.total} in the study"
    else:
        line = f"**{q.left} of {q.total} left** in the study for you"
        if media_id is not None and media_id in q.total_by_media:
            line += f" · {q.left_by_media.get(media_id, 0)} of {q.total_by_media[media_id]} in this file"
    if q.skipped:
        line += f" · {q.skipped} skipped"
    return line + "."


def _queue(ctx: Context, state: UIState, rules: StudySettings, top: list[DeltaGenerator]) -> None:
    orders = dict(ORDERS)
    if rules.independent:
        orders = {"uncertainty": ORDERS["uncertainty"]}
    if state.review_by not in orders:
        state.review_by = "uncertainty"
    state.review_by = top[1].selectbox(
        "Queue",
        list(orders),
        format_func=orders.__getitem__,
        key=Keys.REVIEW_BY,
        index=list(orders).index(state.review_by),
    )
    flt, described = _filters(ctx, state, rules, top[2])
    seen = repr((state.review_by, flt))
    if state.review_filter_seen != seen:  # another queue or filter: the face on screen must match it
        if state.review_filter_seen:  # (the first drawing keeps the face a bookmark or reload opened)
            state.review_face = None
        state.review_filter_seen = seen
    view = review.queue_view(ctx.store, ctx.study, state.review_by, ctx.annotator, flt, state.review_face)
    q = view.queue
    study_q = review.review_queue(ctx.store, ctx.study, state.review_by, ctx.annotator, limit=1) if described else None
    if view.face_id is None:
        live = _live(NO_FACE)
        where = f"in {described}" if described else "in this queue"
        st.success(
            f"{_counts(q, None, described, study_q)} Nothing left {where}: analyze more files, or choose another "
            "queue or filter."
        )
        c1, c2, _ = st.columns([1, 1, 3])
        if q.skipped:
            c1.button(
                f"Show my {plural(q.skipped, 'skipped face')} again", key=Keys.UNSKIP, on_click=_unskip, args=(ctx,)
            )
        c2.button(
            "Undo my last correction",
            key=f"{Keys.UNDO}_{live[1]}",
            shortcut="U",
            on_click=_undo,
            args=(ctx, live),
            icon=":material/undo:",
            disabled=ctx.annotator is None,
        )
        state.review_face = None
        return
    # A face opened from the strip or by Undo may be out of the queue's first items: it stays until labelled.
    state.review_face = view.face_id
    _item(ctx, view.face_id, rules, _counts(q, view.media_id, described, study_q), view.reason)
    ahead = [i.face_id for i in q.items if i.face_id != view.face_id][: review.WARM_AHEAD]
    review.warm_next(ctx.store, ctx.study, ahead)  # their crops cut while this face is looked at


def _mine(ctx: Context, state: UIState, rules: StudySettings, top: list[DeltaGenerator]) -> None:
    flt, _described = _filters(ctx, state, rules, top[2])
    assert ctx.annotator is not None
    flt = dataclasses.replace(flt, labelled_by=None)
    page = review.my_labels(ctx.store, ctx.study, ctx.annotator, flt, after=state.review_mine_after, limit=MINE_PAGE)
    if not page.items and state.review_mine_after is not None:  # fewer labels under the filters now: from the top
        state.review_mine_after = None
        page = review.my_labels(ctx.store, ctx.study, ctx.annotator, flt, limit=MINE_PAGE)
    rows = list(page.items)
    if not rows:
        st.info("You have not labelled any face of this study (with these filters) yet.")
        return
    mine = {r.face_id: next((j for j in r.judgements if j.annotator == ctx.annotator), None) for r in rows}
    labels = {i: (j.label if j is not None else None) for i, j in mine.items()}
    through_track = {i for i, j in mine.items() if j is not None and j.label is not None and "label" in j.from_track}
    by_id = {r.face_id: r for r in rows}
    ids = list(by_id)
    if state.review_face not in by_id:
        state.review_face = ids[0]
    n_tracks = len({by_id[i].track_id for i in through_track})
    direct = len(rows) - len(through_track)
    title = f"You labelled {plural(direct, 'face')} yourself" + (
        f" and {plural(len(through_track), 'face')} through {plural(n_tracks, 'track label')}" if through_track else ""
    )
    if page.total > len(rows) or state.review_mine_after is not None:  # one page of many: the count is the kept one
        title = f"You labelled {plural(page.total, 'face')}; these {len(rows)}: " + title[len("You labelled ") :]
    if state.review_mine_after is not None:
        top[1].button("First page of my labels", key=Keys.REVIEW_MINE_FIRST, on_click=_mine_page, args=(None,))
    if page.after is not None:
        top[1].button(
            f"Next {MINE_PAGE} of my labels", key=Keys.REVIEW_MINE_NEXT, on_click=_mine_page, args=(page.after,)
        )
    # The key holds the labels and the face opened: an edit, the strip's Open or Undo redraw the list as it is now.
    digest = hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:10]
    choice = top[1].selectbox(
        f"{title}; open one to edit",
        ids,
        index=ids.index(state.review_face),
        format_func=lambda i: (
            f"face {i} · {by_id[i].filename} · "
            + (f"{by_id[i].time_s:.1f} s · " if by_id[i].time_s is not None else "")
            + f"{labels[i] or '-'}"
            + (" (track)" if i in through_track else "")
        ),
        key=f"{Keys.REVIEW_MINE}_{digest}_{state.review_face}",
    )
    state.review_face = choice
    _item(ctx, choice, rules, f"**{ids.index(choice) + 1} of {len(ids)}** of your labels.", None)


def _set_name() -> None:
    """Callback of the name prompt: the name becomes this session's annotator (the sidebar field shows it)."""
    name = str(widget_value(Keys.NAME_PROMPT) or "").strip()
    if name:
        ui_state().annotator = name
        set_widget_value(Keys.ANNOTATOR, name)


def _ask_name(ctx: Context) -> None:
    """No queue before a name: an empty queue without one reads as "all done"."""
    if ctx.access.mode == "oidc":
        st.warning("Your login is not on the annotator list of this study; ask a study owner to add you.")
        return
    st.info(
        "Who is labelling? Your name keeps your labels, skips and undo apart from everyone else's "
        "(capitals and spaces do not matter: `Alice` and `alice` are one person)."
    )
    with st.form("name_prompt", border=False):
        st.text_input("Your name", key=Keys.NAME_PROMPT, max_chars=200)
        st.form_submit_button("Start labelling", type="primary", on_click=_set_name)


DROPPED = (
    "A key for the previous face (a double press, or too early) was dropped: nothing stored. Press again for the "
    "face shown."
)


BUTTONS = (
    *(f"{k}_" for k in (Keys.REVIEW_CLASS, Keys.SKIP, Keys.UNDO, Keys.SAVE_EXTRAS, Keys.APPLY_TRACK, Keys.STRIP_OPEN)),
    Keys.UNSKIP,
)
"""The keys of the panel's buttons, left out of its widget snapshot."""


def _dropped_key(state: UIState) -> bool:
    """Whether this panel rerun answers nothing but a key for controls no longer drawn (Streamlit drops those).

    A rerun of the panel alone comes from one of its widgets: when no callback ran and no widget value changed, it
    was a press of a previous face's button, which no longer exists.
    """
    run = get_script_run_ctx()
    rerun_of_panel = bool(run is not None and run.fragment_ids_this_run)
    return rerun_of_panel and not state.review_acted and widget_snapshot(BUTTONS) == state.review_widgets


def _panel(ctx: Context) -> None:
    state = ui_state()
    if _dropped_key(state) and state.flash is None:
        flash("info", DROPPED)
    state.review_acted = False
    slot = st.container()  # one fixed slot for the message, so that later elements keep their places
    with slot:
        show_flash()
    rules = studies.study_settings(ctx.store, ctx.study)
    top = st.columns([4, 7, 3], vertical_alignment="bottom")
    state.review_mode = (
        top[0].segmented_control(
            "View", list(MODES), format_func=MODES.__getitem__, key=Keys.REVIEW_MODE, default=state.review_mode
        )
        or "queue"
    )
    if state.review_mode == "mine":
        _mine(ctx, state, rules, top)
    else:
        _queue(ctx, state, rules, top)
    if rules.independent:
        st.caption(
            "Independent labelling: you see only your own labels"
            + (" and not the model's prediction." if rules.hide_model else ".")
        )
    remember_in_url()
    state.review_widgets = widget_snapshot(BUTTONS)


def render() -> None:
    """The Review page."""
    ctx = context()
    st.title("Review")
    who = f" as {code_span(ctx.annotator)}" if ctx.annotator else ""
    st.caption(
        f"Study {code_span(ctx.study)}{who}: the faces that most need a human look. Every label is kept with your "
        "name and the time, never overwriting the model or anyone else.",
        help="Skips and undo are kept per annotator. A key pressed twice, or before the next face appears, stores "
        "nothing: each vote names the face you saw.",
    )
    _study_rules(ctx)
    if ctx.annotator is None:  # outside the panel: the name must rerun the whole app (sidebar, context)
        _ask_name(ctx)
        return
    if ctx.settings.review_fragment:
        st.fragment(_panel)(ctx)
    else:
        _panel(ctx)


render()
