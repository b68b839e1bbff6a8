"""Analyze: upload images and videos (or take a webcam snapshot), see the faces, store them in the study."""

from __future__ import annotations

import dataclasses
import time

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from models.decode import VIDEO_SUFFIXES
from models.errors import AffectLabError
from models.images import IMAGE_SUFFIXES
from models.registry import get_spec
from webapp import guard, resources, results
from webapp.services import analysis, demo, weights
from webapp.state import Keys, ui_state
from webapp.ui import Context, code_span, context, file_error, flash, plural, show_flash

UPLOAD_TYPES = sorted({s.lstrip(".") for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES})


def _model_choice(ctx: Context) -> str | None:
    present = weights.present_models(ctx.weights_dir)
    if not present:  # the warning above named the missing weights
        st.page_link("views/model_weights.py", label="Open the Models page to fetch weights", icon=":material/memory:")
        return None
    state = ui_state()
    preferred = (
        state.model if state.model in present else (ctx.settings.model if ctx.settings.model in present else present[0])
    )
    model = st.selectbox(
        "Emotion model",
        present,
        index=present.index(preferred),
        key=Keys.ANALYZE_MODEL,
        help="Only models whose weights are present are offered (see the Models page).",
    )
    state.model = model
    if weights.weights_verified(model, ctx.weights_dir) is False:
        st.warning(
            f"The weights of {model} are unverified (imported with trust-unverified): their hash differs "
            "from the published checkpoint's, so predictions may not be the published model's."
        )
    return model


def _uploads() -> list[analysis.Upload]:
    files = st.file_uploader(
        "Images and videos",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=Keys.UPLOADS,
        help="Several files at once; each is analysed and stored in the current study.",
    )
    uploads = [analysis.Upload.of(f.name, guard.upload_content(f)) for f in files or []]
    if st.toggle("Use the webcam", help="Take a snapshot with your camera (your browser asks for permission)."):
        shot = st.camera_input("Webcam snapshot", key=Keys.CAMERA)
        if shot is not None:
            name = f"webcam-{time.strftime('%Y%m%d-%H%M%S')}.jpg"
            uploads.append(analysis.Upload.of(name, guard.upload_content(shot)))
    return uploads


def _run_analysis(
    ctx: Context, model: str, uploads: list[analysis.Upload], fps: float, detection: analysis.Detection = (None, None)
) -> list[int]:
    """The Analyze button: files the study holds already are shown at once (no model run), the new ones analysed."""
    known = st.container()  # above the progress bars, filled once the study was asked
    bars: list[DeltaGenerator] = []  # one per new file, in the order they are analysed

    def progress_for(upload: analysis.Upload) -> analysis.Progress:
        bar = st.progress(0.0, text=f"{code_span(upload.name)}: waiting")
        bars.append(bar)

        def report(fraction: float, message: str) -> None:
            bar.progress(min(1.0, max(0.0, fraction)), text=f"{code_span(upload.name)}: {message}")

        return report

    run = analysis.analyze_files(
        uploads,
        study=ctx.study,
        store=ctx.store,
        load_session=lambda: resources.analysis_session(
            model, str(ctx.weights_dir), ctx.settings.device, ctx.settings.backend, ctx.settings.detect_every
        ),
        media_dir=ctx.media_dir,
        uploaded_by=ctx.annotator or ctx.who,
        fps=fps,
        detection=detection,
        progress_for=progress_for,
        pixels=analysis.PIXELS,
        client=guard.client_key(),
    )
    for o in run.stored:
        known.caption(
            f"{code_span(o.file)}: already in the study ({plural(o.n_faces, 'face')}): showing the "
            "stored results, no model was run."
        )
    if run.load_error is not None:
        st.error(f"Cannot load {model}: {code_span(run.load_error)}")
    ok = failed = 0
    for outcome, bar in zip(run.analysed, bars, strict=True):
        if outcome.error is not None:
            failed += 1
            bar.empty()
            file_error(outcome.file, outcome.error)
            continue
        ok += 1
        again = "" if outcome.new else " (already in the study: stored faces reused)"
        bar.progress(1.0, text=f"{code_span(outcome.file)}: {plural(outcome.n_faces, 'face')}{again}")
        for w in outcome.warnings:
            st.warning(f"{code_span(outcome.file)}: {w}")
    if run.analysed:
        st.caption(f"{plural(ok, 'file')} analysed, {failed} failed; results stored in study {code_span(ctx.study)}.")
    return run.media_ids


def _where_uploads_go(ctx: Context) -> None:
    s = ctx.settings
    where = "in a PostgreSQL database" if s.database_url.startswith("postgresql") else "in this server's data folder"
    kept = "with the file and its face crops" if ctx.media_dir is not None else "as features only (no file, no crops)"
    ttl = (
        f"; files of study {code_span(demo.DEMO_STUDY)} (the samples) go after {s.demo_ttl_hours:g} hours"
        if s.demo_ttl_hours > 0
        else ""
    )
    st.caption(
        f"Uploads are stored {where}, {kept}, in study {code_span(ctx.study)}, and everyone who can open "
        f"that study sees them. A study owner deletes a file on the Dataset page (Delete a media item){ttl}."
    )


def _try_sample(ctx: Context, model: str) -> None:
    """The "Try a sample" button: the samples analysed into the demo study, which is then selected."""
    names = demo.sample_names(ctx.settings.samples_dir)
    if not names:
        return
    st.caption(
        f"No file at hand? {plural(len(names), 'sample')} (a Pexels video of one person and stills of it) "
        f"go to study {code_span(demo.DEMO_STUDY)}."
    )
    if not st.button(f"Try a sample (into study {demo.DEMO_STUDY})", icon=":material/movie:", key=Keys.TRY_SAMPLE):
        return
    bar = st.progress(0.0, text="samples: starting")

    def report(fraction: float, message: str) -> None:
        bar.progress(min(1.0, max(0.0, fraction)), text=code_span(message))

    try:
        outcomes = demo.try_samples(
            ctx.settings.samples_dir,
            store=ctx.store,
            load_session=lambda: resources.analysis_session(
                model, str(ctx.weights_dir), ctx.settings.device, ctx.settings.backend, ctx.settings.detect_every
            ),
            media_dir=ctx.media_dir,
            uploaded_by=ctx.annotator or ctx.who,
            progress=report,
        )
    except AffectLabError as exc:
        bar.empty()
        st.error(f"Cannot load {model}: {code_span(str(exc))}")
        return
    state = ui_state()
    state.analyzed = [o.media_id for o in outcomes if o.media_id is not None]
    state.analyzed_study = demo.DEMO_STUDY  # shown below; the person's own study stays as it was
    problems = [f"{code_span(o.file)}: {o.error}" for o in outcomes if o.error is not None]
    problems += [f"{code_span(o.file)}: {w}" for o in outcomes for w in o.warnings]
    done = (
        f"{plural(len(state.analyzed), 'sample')} analysed into study {code_span(demo.DEMO_STUDY)} (shown below). "
        f"Your study is still {code_span(ctx.study)}: choose {code_span(demo.DEMO_STUDY)} under Study in the "
        "sidebar to review the samples."
    )
    flash("warning" if problems else "success", " ".join([done, *problems]))
    st.rerun()


def render() -> None:
    """The Analyze page."""
    ctx = context()
    st.title("Analyze")
    st.caption(f"Faces, emotions, valence/arousal and engagement. Results go to study {code_span(ctx.study)}.")
    _where_uploads_go(ctx)
    show_flash()
    missing = weights.missing_app_models_help(ctx.settings.model, ctx.weights_dir)
    if missing is not None:
        st.warning(missing, icon=":material/warning:")
    model = _model_choice(ctx)
    if model is None:
        return
    _try_sample(ctx, model)
    uploads = _uploads()
    with st.expander("Video options"):
        fps = st.slider("Frames analysed per second of video", 1.0, 15.0, 5.0, 1.0, key=Keys.FPS)
    with st.expander("Face detection (gallery views)"):
        preset = st.selectbox(
            "Preset",
            list(analysis.DETECTION_PRESETS),
            format_func=analysis.DETECTION_PRESETS.__getitem__,
            key=Keys.GALLERY_PRESET,
            help="Stored with each recording. Auto looks at the first minute: two or more faces make it a gallery.",
        )
        min_face = st.number_input(
            "Minimum face size in pixels (0: the preset's)",
            min_value=0,
            max_value=1000,
            value=0,
            step=4,
            key=Keys.MIN_FACE_SIZE,
            help="Smallest face side looked for: webcam 40; gallery views of 5 x 5 tiles at 720p need about 24.",
        )
    spec = get_spec(model)
    label = f"Analyze {plural(len(uploads), 'file')}" if uploads else "Analyze"
    if st.button(label, type="primary", disabled=not uploads, icon=":material/play_arrow:"):
        ids = _run_analysis(ctx, spec.name, uploads, fps, (preset, int(min_face) or None))
        ui_state().analyzed, ui_state().analyzed_study = ids, None
    state = ui_state()
    if state.analyzed:
        study = state.analyzed_study or ctx.study  # the samples' study, else this one
        results.show(dataclasses.replace(ctx, study=study) if study != ctx.study else ctx, state.analyzed)
    else:
        st.caption("Files analysed before are in the Library, with their stored results.")


render()
