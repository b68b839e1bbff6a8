"""Roster: the study's participants, who a recording expects, and which person of it is whom, in one view.

Every assignment is recorded with who and when; changes are for the study's owners unless they let annotators.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from models.errors import AffectLabError
from webapp import guard
from webapp.services import roster
from webapp.state import Keys
from webapp.ui import Context, context, flash, show_flash
from webapp.views import pickers

NOBODY = "(nobody)"


def _run(action: Callable[..., object], *args: object, done: str = "", **kwargs: object) -> None:
    try:
        result = action(*args, **kwargs)
    except AffectLabError as exc:
        st.error(str(exc))
        return
    flash("success", done.format(result))
    st.rerun()


def render() -> None:
    """The Roster page."""
    ctx = context()
    st.title("Roster")
    show_flash()
    media_id = pickers.recording(ctx, Keys.ROSTER_MEDIA)
    if media_id is None:
        return
    view = roster.roster_view(ctx.store, ctx.study, media_id, ctx.owner)
    r = view.roster
    st.subheader(f"Participants: {r.n_expected} expected in this recording")
    st.dataframe(
        pd.DataFrame(
            [{"participant": x.participant, "name": x.name, "group": x.group, "reason": x.reason} for x in r.rows]
        ),
        hide_index=True,
    )
    if not view.may_change:
        st.caption("The roster and the assignments are changed by the study's owners.")
    elif not ctx.annotator:
        st.caption("Type your name in the sidebar to assign persons: it is recorded with each change.")
    else:
        _changes(ctx, media_id, view)
    with st.expander("History of assignments"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "when": h.created_at,
                        "who": h.annotator,
                        "person": h.person_id,
                        "participant": h.participant,
                        "how": h.source,
                    }
                    for h in view.history
                ]
            ),
            hide_index=True,
        )


def _changes(ctx: Context, media_id: int, view: roster.RosterView) -> None:
    codes = [p.code for p in view.participants]
    with st.form("roster_assign"):
        st.markdown("**Who is who in this recording**")
        chosen: dict[int, str | None] = {}
        for p in view.persons:
            c1, c2 = st.columns([1, 4])
            if p.person_id in view.thumbnails:
                c1.image(view.thumbnails[p.person_id], width=64)
            now = view.roster.persons.get(p.person_id)
            options = [NOBODY, *codes]
            pick = c2.selectbox(
                f"{p.label} ({p.n_faces} faces)", options, index=options.index(now) if now in options else 0
            )
            chosen[p.person_id] = None if pick == NOBODY else pick
        if st.form_submit_button("Save assignments"):
            _run(
                roster.save_assignments,
                ctx.store,
                ctx.study,
                media_id,
                ctx.annotator,
                chosen,
                owner=ctx.owner,
                done="{} assignments saved",
            )
    if st.button("Assign from earlier recordings (same tile and appearance)"):
        _run(
            roster.remember,
            ctx.store,
            ctx.study,
            media_id,
            ctx.annotator,
            owner=ctx.owner,
            done="{} persons assigned as before",
        )
    with st.form("roster_expected"):
        listed = [x.participant for x in view.roster.rows if x.reason != "absent"]
        expected = st.multiselect("Expected in this recording (none: everyone)", codes, default=listed)
        if st.form_submit_button("Save the expected list"):
            _run(roster.save_expected, ctx.store, ctx.study, media_id, expected, owner=ctx.owner, done="{} expected")
    up = st.file_uploader("Import participants (participant,name,group)", type=["csv"], key=Keys.ROSTER_CSV)
    if up is not None and st.button("Import participants"):
        _run(
            roster.import_roster,
            ctx.store,
            ctx.study,
            guard.upload_bytes(up),
            owner=ctx.owner,
            done="{} participants imported",
        )
    up2 = st.file_uploader("Import assignments (recording,person,participant)", type=["csv"], key=Keys.ROSTER_ASSIGN)
    if up2 is not None and st.button("Import assignments"):
        _run(
            roster.import_assignments,
            ctx.store,
            ctx.study,
            guard.upload_bytes(up2),
            ctx.annotator,
            owner=ctx.owner,
            done="{} assignments imported",
        )
    if ctx.owner:
        allow = st.toggle(
            "Annotators may rename, merge, split and assign persons",
            value=view.annotators_allowed,
            key=Keys.ROSTER_ALLOW,
        )
        if allow != view.annotators_allowed:
            _run(roster.allow_annotators, ctx.store, ctx.study, allow, owner=ctx.owner, done="saved")


render()
