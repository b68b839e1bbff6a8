"""Stored results of media items, drawn from the database without running a model (Analyze and Library pages).

Images: the picture with numbered boxes, each face's crop, probabilities and a quick correction; videos: the player
from a chosen time, annotated key frames, and per-track timelines of emotions, valence/arousal and engagement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from db import recording
from db.recording import TrackSeries, TrackSummary
from db.review import StudySettings
from db.rows import FaceLabel, MediaRow
from models.errors import AffectLabError
from webapp import figures
from webapp.services import library, privacy, review
from webapp.state import Keys, widget_value
from webapp.ui import Context, code_span, flash, plural


def _correct_cb(ctx: Context, face_id: int, key: str) -> None:
    label = widget_value(key)
    if not label:
        return
    if ctx.annotator is None:
        flash("warning", "Enter your name in the sidebar (Your name) before the first correction.")
        return
    try:
        review.correct(ctx.store, ctx.annotator, face_id=face_id, label=label)
    except AffectLabError as exc:
        flash("error", f"Correction not stored: {code_span(str(exc))}")
        return
    flash("success", f"Stored: face {face_id} is {label} (by {code_span(ctx.annotator)}). Undo on the Review page (U).")


def _face_rows(ctx: Context, faces: Sequence[FaceLabel], rules: StudySettings) -> None:
    crops = privacy.viewer_crops(ctx.store, [f.face_id for f in faces], rules, ctx.owner, ctx.study)
    for n, face in enumerate(faces, start=1):
        c1, c2, c3 = st.columns([1, 3, 3], vertical_alignment="center")
        crop = crops.get(face.face_id)
        with c1:
            st.markdown(f"**Face {n}**")
            if crop is not None:
                st.image(crop, width=110)
            else:
                st.caption("no crop stored (features-only mode)")
        with c2:
            if face.model_probs:
                title = f"Face {n}: {face.model or 'model'} probabilities"
                st.plotly_chart(
                    figures.probability_bar(face.model_probs, title, face.human_label),
                    key=f"bar_{face.face_id}",
                    config={"displayModeBar": False},
                )
        with c3:
            source = "annotators" if face.label_source == "human" else "model"
            st.markdown(f"Label: **{face.label or '-'}** (from the {source})")
            key = f"{Keys.QUICK_CORRECT}_{face.face_id}"
            st.pills(
                f"Correct face {n}",
                review.class_names(face),
                key=key,
                on_change=_correct_cb,
                args=(ctx, face.face_id, key),
                disabled=ctx.annotator is None,
                help=None if ctx.annotator else "Enter your name in the sidebar first.",
            )


def _circumplex(faces: Sequence[FaceLabel], key: str) -> None:
    points = [
        (f.model_valence, f.model_arousal, f"face {n}")
        for n, f in enumerate(faces, start=1)
        if f.model_valence is not None and f.model_arousal is not None
    ]
    if points:
        st.plotly_chart(figures.circumplex(points, "Valence and arousal (model)"), key=key)


def _image_result(ctx: Context, media: MediaRow, faces: Sequence[FaceLabel], rules: StudySettings) -> None:
    left, right = st.columns([3, 2])
    with left:
        try:
            image = library.shown_image(ctx.store, ctx.study, media, faces, rules, ctx.owner, ctx.media_dir)
        except AffectLabError as exc:
            st.error(f"Cannot show the image: {code_span(str(exc))}")
        else:
            if image is not None:
                boxes = [figures.BoxLabel(f.box, n, f.label or "") for n, f in enumerate(faces, start=1)]
                st.image(
                    figures.draw_boxes(image, boxes), caption=f"{plural(len(faces), 'face')}, numbered largest first"
                )
            else:
                st.caption("The image is not kept (features-only privacy mode).")
    with right:
        _circumplex(faces, f"va_{media.id}")
    _face_rows(ctx, faces, rules)


@st.cache_data(show_spinner="Extracting key frames...", max_entries=32)
def _key_frames(path: str, mtime: float, frames: tuple[int, ...], boxes: tuple[tuple, ...], blur: bool) -> list:
    del mtime  # part of the cache key only: a replaced file is decoded again
    out = []
    hidden = {fr: [b for f2, _t, b in boxes if f2 == fr] for fr in frames} if blur else None
    for time_s, index, image in library.key_frames(Path(path), frames, blur=hidden):
        marks = [figures.BoxLabel(b, t + 1, f"track {t}") for fr, t, b in boxes if fr == index]
        out.append((time_s, figures.draw_boxes(image, marks)))
    return out


def _track_page(media: MediaRow, pages: int) -> None:
    """The number input choosing the page of tracks shown (when the recording has more than one page)."""
    if pages > 1:
        st.number_input(
            f"Tracks shown: page (of {pages}, {library.TRACKS_PER_PAGE} tracks each)",
            min_value=1,
            max_value=pages,
            step=1,
            key=f"{Keys.TRACK_PAGE}_{media.id}",
        )


def _track_figures(
    media: MediaRow, t: TrackSummary, series: TrackSeries | None, view: library.RecordingView, n_tracks: int
) -> None:
    """One track's expander: its counts, and its binned timelines (probabilities, valence/arousal, classes)."""
    name = f"Track {t.track_index}" if t.track_id is not None else "Faces without a track"
    span = f", {t.start_s:.1f}-{t.end_s:.1f} s" if t.start_s is not None and t.end_s is not None else ""
    eng = ""
    if view.show_model and t.engagement_score is not None:
        eng = f", engagement {t.engagement_score:.2f} ({t.engagement_label})"
    per = recording.width_name(view.width_s)
    with st.expander(f"{name}: {plural(t.n_faces, 'face')}{span}{eng}", expanded=n_tracks <= 3):
        buckets = series.buckets if series is not None else ()
        times = [b.start_s + view.width_s / 2 for b in buckets]
        key = f"{media.id}_{t.track_id}"
        if view.show_model and any(b.n_predicted for b in buckets):
            shown = [b for b in buckets if b.n_predicted]
            st.plotly_chart(
                figures.probability_timeline(
                    [b.start_s + view.width_s / 2 for b in shown],
                    [b.probs for b in shown],
                    f"{name}: emotion probabilities (mean per {per})",
                ),
                key=f"pt_{key}",
            )
        if view.show_model and any(b.valence is not None for b in buckets):
            st.plotly_chart(
                figures.va_timeline(
                    times,
                    [b.valence for b in buckets],
                    [b.arousal for b in buckets],
                    f"{name}: valence and arousal (mean per {per})",
                ),
                key=f"va_{key}",
            )
        if view.show_human and any(b.human_counts for b in buckets):
            st.plotly_chart(
                figures.class_counts_timeline(
                    times,
                    [b.human_counts for b in buckets],
                    f"{name}: annotators' classes (faces per {per}, corrections included)",
                ),
                key=f"hc_{key}",
            )
        if view.show_model and series is not None and series.engagement:
            st.plotly_chart(
                figures.engagement_timeline(
                    [(s, s + view.width_s, p) for s, p in series.engagement],
                    f"{name}: engagement (mean per {per})",
                ),
                key=f"en_{key}",
            )
        elif view.show_model and t.track_id is not None:
            st.caption("No engagement for this track (engagement weights absent, or too few faces).")


def _video_result(ctx: Context, media: MediaRow, rules: StudySettings) -> None:
    video = library.video_view(ctx.store, ctx.study, media, rules, ctx.owner, ctx.media_dir)
    path, blur = video.path, video.blur
    duration = float(media.duration_s or 0.0)
    if media.analysis_status != "complete":
        st.warning("This recording's analysis was stopped midway: analyse the same file again to resume it.")
    chosen = widget_value(f"{Keys.TRACK_PAGE}_{media.id}")  # drawn below, once the number of pages is known
    view = library.recording_view(ctx.store, ctx.study, media, rules, ctx.owner, page=int(chosen or 1) - 1)
    if path is not None:
        if blur:
            st.caption(
                "The video player is hidden: this study blurs faces for everyone but its owners, and a video "
                "cannot be blurred frame by frame. The key frames below are blurred."
            )
        else:
            start = st.slider(
                "Play from (seconds)", 0.0, max(duration, 0.1), 0.0, step=0.5, key=f"{Keys.PLAY_FROM}_{media.id}"
            )
            st.video(str(video.playable or path), start_time=int(start))  # a GIF plays as MP4
        shots = _key_frames(str(path), path.stat().st_mtime, view.key_frames, view.boxes, blur)
        if shots:
            cols = st.columns(len(shots))
            for col, (time_s, im) in zip(cols, shots, strict=True):
                col.image(im, caption=f"{time_s:.1f} s")
    else:
        st.caption("The video is not kept (features-only privacy mode).")
    st.caption(
        f"{plural(len(view.tracks), 'track')}; figures per track binned per {recording.width_name(view.width_s)} "
        "(means of the faces in each bin)."
    )
    _track_page(media, view.pages)
    for t in view.shown:
        _track_figures(media, t, view.series.get(t.track_id), view, len(view.tracks))


def show(ctx: Context, media_ids: list[int]) -> None:
    """The stored results of the given media items of the current study (deleted ones are left out)."""
    shown = library.stored_results(ctx.store, ctx.study, media_ids, ctx.annotator, ctx.owner)
    rules = shown.settings
    if ctx.annotator is None:
        st.info("To correct a label, enter your name in the sidebar (Your name) first.")
    for item in shown.items:  # deleted ones are left out
        m, faces = item.media, item.faces
        st.subheader(code_span(m.filename), divider="gray")  # the name as literal text, never markdown or HTML
        if not (m.n_faces if m.kind == "video" else faces):
            st.info("No face found in this file.")
            continue
        if m.kind == "video":
            _video_result(ctx, m, rules)
        else:
            _image_result(ctx, m, faces, rules)
