"""Classroom: lecture segments, students with renames, merges and splits, class tables and the figure over time.

Every change to the persons is recorded with who and when; tables and figure follow the corrected persons.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from models.errors import AffectLabError
from webapp import guard
from webapp.services import classroom
from webapp.state import Keys
from webapp.ui import code_span, context, flash, show_flash


def _run(action: Callable[..., object], *args: object, done: str = "", **kwargs: object) -> None:
    try:
        action(*args, **kwargs)
    except AffectLabError as exc:
        st.error(str(exc))
        return
    if done:
        flash("success", done)
    st.rerun()  # the tables and the forms' choices above were drawn before the change


def render() -> None:
    """The Classroom page."""
    ctx = context()
    st.title("Classroom")
    show_flash()
    videos = classroom.class_videos(ctx.store, ctx.study)
    if not videos:
        st.info(f"Study {code_span(ctx.study)} holds no recording yet: analyze a lecture video on the Analyze page.")
        return
    names = {m.id: f"{m.filename} (#{m.id}, {m.duration_s or 0:.0f} s)" for m in videos}
    ids: list[int] = list(names)
    media_id = st.selectbox("Recording", ids, format_func=names.__getitem__, key=Keys.CLASSROOM_MEDIA)
    rec = classroom.recording_view(ctx.store, ctx.study, media_id, ctx.owner)
    # independent labelling: no one else's names or labels for an annotator (the class tables mix everyone's labels)
    blind = rec.settings.independent and not ctx.owner
    if ctx.owner:
        blur = st.toggle(
            "Blur faces for everyone but the owners (privacy for minors)",
            value=rec.settings.blur_faces,
            key=Keys.CLASSROOM_BLUR_FACES,
        )
        if blur != rec.settings.blur_faces:
            rec = classroom.set_blur_faces(ctx.store, ctx.study, media_id, blur, owner=ctx.owner)
    persons, segments = rec.persons, rec.segments

    st.subheader("Lecture segments")
    if segments:
        st.dataframe(
            pd.DataFrame([{"id": s.id, "name": s.name, "start_s": s.start_s, "end_s": s.end_s} for s in segments]),
            hide_index=True,
        )
    with st.form("classroom_add_segment", clear_on_submit=True):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Name")
        start = c2.number_input("Start (s)", min_value=0.0, step=1.0)
        end = c3.number_input("End (s)", min_value=0.0, step=1.0)
        if st.form_submit_button("Add segment"):
            _run(
                classroom.add_segment,
                ctx.store,
                ctx.study,
                ctx.who,
                media_id,
                name,
                start,
                end,
                done=f"segment {name!r} added",
            )
    upload = st.file_uploader("Or import a CSV (media,name,start_s,end_s)", type=["csv"], key=Keys.CLASSROOM_CSV)
    if upload is not None and st.button("Import segments"):
        _run(
            classroom.import_segments,
            ctx.store,
            ctx.study,
            guard.upload_bytes(upload),
            ctx.who,
            done="segments imported",
        )

    st.subheader("Students")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "person": p.label,
                    "tracks": ", ".join(map(str, p.track_indexes)),
                    "faces": p.n_faces,
                    "from_s": p.start_s,
                    "to_s": p.end_s,
                }
                for p in persons
            ]
        ),
        hide_index=True,
    )
    thumbs = rec.thumbnails
    shown = [p for p in persons if p.person_id in thumbs]
    for start in range(0, len(shown), 8):
        for col, p in zip(st.columns(8), shown[start : start + 8], strict=False):
            col.image(thumbs[p.person_id], caption=p.label, width=72)
    if rec.blur:
        st.caption("Faces are blurred: this study protects its participants' privacy (owners see them).")
    by_label = {p.label: p for p in persons}
    if ctx.annotator:
        c1, c2 = st.columns(2)
        with c1.form("classroom_rename"):
            who = st.selectbox("Person", list(by_label))
            pid = st.text_input("Participant id")
            if st.form_submit_button("Rename") and who:
                _run(
                    classroom.rename_person,
                    ctx.store,
                    ctx.study,
                    media_id,
                    ctx.annotator,
                    by_label[who].person_id,
                    pid,
                    done="renamed",
                    owner=ctx.owner,
                )
        with c2.form("classroom_merge"):
            keep = st.selectbox("Keep", list(by_label))
            into = st.selectbox("Merge into it", list(by_label), index=min(1, len(by_label) - 1))
            if st.form_submit_button("Merge") and keep and into:
                _run(
                    classroom.merge_persons,
                    ctx.store,
                    ctx.study,
                    media_id,
                    ctx.annotator,
                    by_label[keep].person_id,
                    by_label[into].person_id,
                    done=f"{into} merged into {keep}",
                    owner=ctx.owner,
                )
        tracks = {
            f"{p.label}: track {i}": t
            for p in persons
            for t, i in zip(p.track_ids, p.track_indexes, strict=True)
            if len(p.track_ids) > 1
        }
        if tracks:
            with st.form("classroom_split"):
                piece = st.selectbox("Track holding another student", list(tracks))
                if st.form_submit_button("Split off"):
                    _run(
                        classroom.split_track,
                        ctx.store,
                        ctx.study,
                        media_id,
                        ctx.annotator,
                        tracks[piece],
                        done="track split off",
                        owner=ctx.owner,
                    )
        every = {f"{p.label}: track {i}": t for p in persons for t, i in zip(p.track_ids, p.track_indexes, strict=True)}
        with st.form("classroom_split_at"):
            c1, c2 = st.columns(2)
            piece = c1.selectbox("Track that changes student", list(every))
            at = c2.number_input("From second", min_value=0.0, step=1.0)
            if st.form_submit_button("Split at this time") and piece:
                _run(
                    classroom.split_track_at,
                    ctx.store,
                    ctx.study,
                    media_id,
                    ctx.annotator,
                    every[piece],
                    at,
                    done=f"{piece} split at {at:g} s",
                    owner=ctx.owner,
                )
    else:
        st.caption("Type your name in the sidebar to rename, merge or split persons.")
    with st.expander("History of changes"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "when": h.created_at,
                        "who": "" if blind and h.annotator != ctx.annotator else h.annotator,
                        "what": h.kind,
                        "participant": h.participant,
                        "track": h.track_id,
                    }
                    for h in rec.history
                ]
            ),
            hide_index=True,
        )

    st.subheader("Class over time")
    if blind:
        st.info(
            "Independent labelling: the class tables mix every annotator's labels, so they are for the study's "
            "owners until the labelling is done."
        )
        return
    over_time = classroom.class_over_time(ctx.store, ctx.study, ctx.owner)
    tables = over_time.tables
    value = st.selectbox("Figure", ["engagement_p", "visible_share", "valence", "arousal"])
    students = st.multiselect(
        "One line per student", sorted({r["person"] for r in tables.minutes if r["media_id"] == media_id})
    )
    st.plotly_chart(classroom.class_figure(tables, segments, media_id, students, value), key="class_figure")
    for table, what in classroom.CLASS_TABLES.items():
        st.markdown(f"**{what.capitalize()}** ({code_span(table)})")
        st.dataframe(pd.DataFrame(tables.table(table)), hide_index=True)
        if table in over_time.downloads:
            data, card = over_time.downloads[table]
            st.download_button(
                f"Download {table}.csv", data, file_name=f"{table}.csv", key=f"{Keys.CLASS_DOWNLOAD}_{table}"
            )
            with st.expander(f"What the columns of {table} mean"):
                st.markdown(card)


render()
