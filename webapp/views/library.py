"""Library: every media item of the study with a thumbnail and its faces and tracks; open one to see its stored results.

Nothing here runs a model: the results come from the database (and the kept media file, when one is kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from models.errors import AffectLabError
from webapp import results
from webapp.services import library
from webapp.state import Keys, ui_state
from webapp.ui import code_span, context, plural, show_flash

PER_ROW = 4


@st.cache_data(show_spinner=False, max_entries=256)
def _thumb(path: str, mtime: float, kind: str, time_s: float, blur: bool = False) -> np.ndarray:
    del mtime  # part of the cache key only
    return library.thumbnail(Path(path), kind, time_s, blur=blur)


def _open(media_id: int | None) -> None:
    ui_state().library_media = media_id


def _card(card: library.LibraryCard, blur: bool) -> None:
    m, path = card.media, card.path
    with st.container(border=True):
        if path is not None:
            try:
                st.image(_thumb(str(path), path.stat().st_mtime, m.kind, card.first_face_s, blur), width="stretch")
            except AffectLabError as exc:
                st.caption(f"No thumbnail: {code_span(str(exc))}")
        else:
            st.caption("The file is not kept (features-only privacy mode).")
        st.markdown(code_span(m.filename))
        what = plural(m.n_faces, "face")
        if m.kind == "video":
            what += f" · {plural(card.n_tracks, 'track')} · {m.duration_s or 0:.1f} s"
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
    view = library.library_view(ctx.store, ctx.study, ctx.owner, ctx.media_dir)
    state = ui_state()
    if not view.cards:
        st.info(f"Study {code_span(ctx.study)} holds no media yet: analyze files on the Analyze page.")
        return
    if state.library_media in {c.media.id for c in view.cards}:
        st.button("Back to the library", on_click=_open, args=(None,), icon=":material/arrow_back:")
        st.caption("Stored results, read from the database (no model is run).")
        results.show(ctx, [state.library_media])
        return
    st.caption(
        f"{plural(len(view.cards), 'media item')} in study {code_span(ctx.study)}; open one to see its stored results."
    )
    for start in range(0, len(view.cards), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, card in zip(cols, view.cards[start : start + PER_ROW], strict=False):
            with col:
                _card(card, view.blur)


render()
