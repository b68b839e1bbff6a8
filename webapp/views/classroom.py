"""Classroom: lecture segments, students with renames, merges and splits, class tables and the figure over time.

Every change to the persons is recorded with who and when; tables and figure follow the corrected persons.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pandas as pd
import streamlit as st

from db.classroom import ClassTables
from models.errors import AffectLabError
from webapp import guard
from webapp.services import classroom
from webapp.state import Keys
from webapp.ui import Context, code_span, context, flash, show_flash
from webapp.views import pickers


def _run(action: Callable[..., object], *args: object, done: str = "", **kwargs: object) -> None:
    try:
        action(*args, **kwargs)
    except AffectLabError as exc:
        st.error(str(exc))
        return
    if done:
        flash("success", done)
    st.rerun()  # the tables and the forms' choices above were drawn before the change


def _figure(tables: ClassTables, media_id: int) -> None:
    """The figure of the recording chosen on the page, with its PNG and SVG downloads (drawn on the click)."""
    c1, c2 = st.columns(2)
    kind = c1.selectbox(
        "Figure",
        list(classroom.FIGURE_KINDS),
        format_func=classroom.FIGURE_KINDS.__getitem__,
        key=Keys.CLASSROOM_FIGURE,
    )
    value = c2.selectbox("Value", classroom.figure_values(kind), key=Keys.CLASSROOM_FIGURE_VALUE)
    students: list[str] = []
    if kind == "participant-lines":
        students = st.multiselect(
            "Students (none: all)",
            sorted({r["person"] for r in tables.minutes if r["media_id"] == media_id}),
            key=Keys.CLASSROOM_FIGURE_STUDENTS,
        )
    try:
        fig = classroom.class_figure(tables, media_id, kind, value, students)
    except AffectLabError as exc:
        st.info(str(exc))
    else:
        st.plotly_chart(fig, key="class_figure")
        problem = classroom.figure_export_problem()
        if problem:
            st.caption(f"No PNG / SVG files on this server: {problem}")
        else:
            d1, d2, _ = st.columns([1, 1, 4])
            stem = f"m{media_id}-{kind}-{value}"
            for col, fmt in ((d1, "png"), (d2, "svg")):
                col.download_button(
                    f"Download {fmt.upper()}",
                    partial(classroom.figure_file, fig, fmt),  # drawn on the click, not on every render
                    file_name=f"{stem}.{fmt}",
                    mime="image/png" if fmt == "png" else "image/svg+xml",
                    key=f"{Keys.CLASS_DOWNLOAD}_figure_{fmt}",
                    on_click="ignore",
                )


def _figure_on_demand(tables: ClassTables, media_id: int) -> None:
    """The figure, drawn only while its expander is open.

    A fragment: opening it, or changing the figure's choices, reruns this part alone, on the tables the page computed.
    """
    shown = st.expander(
        "Figure: the class mean, each student, or the lecture segments",
        key=Keys.CLASSROOM_FIGURE_OPEN,
        on_change="rerun",
        icon=":material/show_chart:",
    )
    if shown.open:
        with shown:
            _figure(tables, media_id)


def render() -> None:
    """The Classroom page."""
    ctx = context()
    st.title("Classroom")
    show_flash()
    media_id = pickers.recording(ctx, Keys.CLASSROOM_MEDIA)
    if media_id is None:
        return
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

    if ctx.owner:
        _recording_details(ctx, media_id)

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
    over_time = classroom.class_over_time(ctx.store, ctx.study, ctx.owner)  # the tables, once per render
    tables = over_time.tables
    st.fragment(_figure_on_demand)(tables, media_id)
    for table, what in classroom.CLASS_TABLES.items():
        st.markdown(f"**{what.capitalize()}** ({code_span(table)})")
        st.dataframe(pd.DataFrame(tables.table(table)), hide_index=True)
        if table in over_time.downloads:
            data, card = over_time.downloads[table]
            st.download_button(
                f"Download {table}.csv",
                data,
                file_name=f"{table}.csv",
                mime="text/csv",
                key=f"{Keys.CLASS_DOWNLOAD}_{table}",
                on_click="ignore",
            )
            with st.expander(f"What the columns of {table} mean"):
                st.markdown(card)
    if ctx.owner:
        _study_tables(ctx)


def _recording_details(ctx: Context, media_id: int) -> None:
    """Owners: the recording's course, name and date (the study tables' columns), one by one or from a CSV."""
    info = classroom.recording_info(ctx.store, ctx.study, media_id)
    shown = f"{info.course or 'no course'}, {info.date or 'no date'}"
    with st.expander(f"Course, name and date of this recording ({shown})"):
        with st.form("classroom_recording_info"):
            c1, c2, c3 = st.columns(3)
            course = c1.text_input("Course", value=info.course or "")
            name = c2.text_input("Recording name", value=info.recording)
            day = c3.text_input("Date (YYYY-MM-DD)", value=info.date or "")
            if st.form_submit_button("Save"):
                _run(
                    lambda: classroom.set_recording_info(
                        ctx.store, ctx.study, media_id, course, name, day, owner=ctx.owner
                    ),
                    done="recording details saved",
                )
        upload = st.file_uploader(
            "Or import a CSV for many recordings (media plus any of course,recording,date)",
            type=["csv"],
            key=Keys.CLASSROOM_RECORDINGS_CSV,
        )
        if upload is not None and st.button("Import recording details"):
            data = guard.upload_bytes(upload)
            _run(
                lambda: classroom.import_recording_info(ctx.store, ctx.study, data, owner=ctx.owner),
                done="recording details imported",
            )


def _study_tables(ctx: Context) -> None:
    """Owners: the study tables over every recording (per participant per recording, per segment type, wide)."""
    st.subheader("Study tables")
    st.caption(
        "Every recording of the study: one row per participant per recording, per segment type (e.g. every quiz) "
        "and per participant, with a codebook (model, weights, sampling, engagement window, each column)."
    )
    fmt = st.selectbox(
        "Format",
        list(classroom.STUDY_FORMATS),
        format_func=classroom.STUDY_FORMATS.__getitem__,
        key=Keys.CLASSROOM_STUDY_FORMAT,
    )
    st.download_button(
        f"Download the study tables ({classroom.STUDY_FORMATS[fmt]}, zip)",
        lambda: classroom.study_tables_zip(ctx.store, ctx.study, fmt, owner=ctx.owner),
        file_name=f"study-tables-{fmt}.zip",
        mime="application/zip",
        key=f"{Keys.CLASS_DOWNLOAD}_study_{fmt}",
    )


render()
