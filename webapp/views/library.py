"""Library: every media item of the study with a thumbnail and its faces and tracks; open one to see its stored results.

Nothing here runs a model: the results come from the database (and the kept media file, when one is kept).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from db.rows import MediaRow
from models.errors import AffectLabError
from webapp import results
from webapp.services import library, privacy, studies
from webapp.state import Keys, ui_state
from webapp.ui import Context, code_span, context, plural, show_flash

PER_ROW = 4


@st.cache_data(show_spinner=False, max_entries=256)
def _thumb(path: str, mtime: float, kind: str, time_s: float, blur: bool = False):
    del mtime  # part of the cache key only
    image = library.thumbnail(Path(path), kind, time_s)
    if blur:  # the thumbnail is small and its boxes unknown here: all of it is blurred
        h, w = image.shape[:2]
        image = privacy.blur_image(image, [(0, 0, w, h)], radius=6)
    return image


def _open(media_id: int | None) -> None:
    ui_state().library_media = media_id


def _card(ctx: Context, m: MediaRow, n_tracks: int, first_face_s: float, blur: bool) -> None:
    with st.container(border=True):
        path = library.kept_media_file(ctx.media_dir, ctx.store, ctx.study, m) if ctx.media_dir else None
        if path is not None:
            try:
                st.image(_thumb(str(path), path.stat().st_mtime, m.kind, first_face_s, blur), width="stretch")
            except AffectLabError as exc:
                st.caption(f"No thumbnail: {code_span(str(exc))}")
        else:
            st.caption("The file is not kept (features-only privacy mode).")
        st.markdown(code_span(m.filename))
        what = plural(m.n_faces, "face")
        if m.kind == "video":
            what += f" · {plural(n_tracks, 'track')} · {m.duration_s or 0:.1f} s"
        st.caption(f"{m.kind} · {what} · {m.created_at:%Y-%m-%d %H:%M}")
        st.button(
            "Open",
            key=f"{Keys.LIBRARY_OPEN}_{m.id}",
            on_click=_open,
            args=(m.id,),
            width="stretch",
            type="primary" if ui_state().library_media == m.id else "secondary",
        )


def render() -> None:
    """The Library page."""
    ctx = context()
    st.title("Library")
    show_flash()
    media = studies.study_media(ctx.store, ctx.study)
    state = ui_state()
    if not media:
        st.info(f"Study {code_span(ctx.study)} holds no media yet: analyze files on the Analyze page.")
        return
    by_id = {m.id: m for m in media}
    if state.library_media in by_id:
        m = by_id[state.library_media]
        st.button("Back to the library", on_click=_open, args=(None,), icon=":material/arrow_back:")
        st.caption("Stored results, read from the database (no model is run).")
        results.show(ctx, [m.id])
        return
    st.caption(
        f"{plural(len(media), 'media item')} in study {code_span(ctx.study)}; open one to see its stored results."
    )
    faces = studies.study_faces(ctx.store, ctx.study)
    first: dict[int, float] = {}
    tracks: dict[int, set[int]] = {}
    for f in faces:
        first[f.media_id] = min(first.get(f.media_id, float("inf")), f.time_s or 0.0)
        if f.track_id is not None:
            tracks.setdefault(f.media_id, set()).add(f.track_id)
    blur = privacy.blurs(studies.study_settings(ctx.store, ctx.study), ctx.owner)
    for start in range(0, len(media), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, m in zip(cols, media[start : start + PER_ROW], strict=False):
            with col:
                t = first.get(m.id, 0.0)
                _card(ctx, m, len(tracks.get(m.id, ())), 0.0 if t == float("inf") else t, blur)


render()
