"""Widgets several pages share (not a page): the recording picker of the Classroom and Roster pages."""

from __future__ import annotations

import streamlit as st

from webapp.services import classroom
from webapp.ui import Context, code_span


def recording(ctx: Context, key: str) -> int | None:
    """The study's recording chosen in a selectbox (state under ``key``), None when the study holds none (said)."""
    videos = classroom.class_videos(ctx.store, ctx.study)
    if not videos:
        st.info(f"Study {code_span(ctx.study)} holds no recording yet: analyze a lecture video on the Analyze page.")
        return None
    names = {m.id: f"{m.filename} (#{m.id}, {m.duration_s or 0:.0f} s)" for m in videos}
    media_id: int = st.selectbox("Recording", list(names), format_func=names.__getitem__, key=key)
    return media_id
