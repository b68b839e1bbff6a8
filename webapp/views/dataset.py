"""Dataset: counts, model-vs-human confusion, agreement, exports (owners), deletions (owners).

The two charts are SVG (:mod:`webapp.svg_figures`): no plotly.js to load and run in the browser on each visit.

Under independent labelling an annotator sees no one else's labels, counts, agreement or names here: only the
study's size, the model's counts (unless the model is hidden too) and the media list without uploaders. Owners see
every figure with the number of faces behind it, and no kappa on fewer than ``db.quality.MIN_KAPPA_FACES`` faces.
"""

from __future__ import annotations

import functools
from typing import Literal

import pandas as pd
import streamlit as st

from db.quality import MIN_KAPPA_FACES
from db.review import StudySettings
from db.rows import StudyStats
from models.errors import AffectLabError
from webapp import svg_figures
from webapp.services import exports, library, studies
from webapp.state import Keys
from webapp.ui import Context, code_span, context, flash, plural, show_flash


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _kappa(value: float | None, faces: int) -> str:
    """A kappa for people: none on too few faces."""
    return "-" if faces < MIN_KAPPA_FACES else _fmt(value)


def _chart(svg: str, width: Literal["stretch", "content"] = "stretch") -> None:
    """An SVG chart as an image (``st.html`` strips SVG in the browser)."""
    st.image(svg, width=width)


def _counts(stats: StudyStats, blind: bool, rules: StudySettings) -> None:
    c = stats.counts
    shown = [("Media", "media"), ("Faces", "faces"), ("Tracks", "tracks")]
    if not blind:
        shown += [("Corrected faces", "corrected_faces"), ("Corrections", "annotations"), ("Annotators", "annotators")]
    for col, (label, key) in zip(st.columns(6), shown, strict=False):
        col.metric(label, int(c.get(key, 0)))
    if blind:
        if not rules.hide_model:
            _chart(svg_figures.bars(stats.labels, {"model": stats.model_counts}, "Faces per class (the model's)"))
        return
    series = {"model": stats.model_counts, "annotators": stats.human_counts, "exported label": stats.label_counts}
    _chart(svg_figures.bars(stats.labels, series, "Faces per class"))
    if stats.predictions_only:
        st.info("No human corrections yet: every label is the model's (exports say so).")


def _agreement(stats: StudyStats) -> None:
    st.subheader("Model vs. annotators")
    if any(any(row) for row in stats.confusion):
        _chart(
            svg_figures.heatmap(stats.labels, stats.confusion, "Confusion: annotators' class vs. model's class"),
            "content",
        )
    else:
        st.caption("The confusion matrix appears once annotators have labelled faces.")
    n_model, n_multi = stats.model_faces, stats.multi_faces
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(f"Model accuracy vs. annotators ({plural(n_model, 'face')})", _fmt(stats.model_accuracy))
    c2.metric(f"Cohen's kappa, model vs. annotators ({plural(n_model, 'face')})", _kappa(stats.model_kappa, n_model))
    c3.metric(f"Fleiss' kappa, annotators ({plural(n_multi, 'face')})", _kappa(stats.fleiss_kappa, n_multi))
    c4.metric(
        f"Krippendorff's alpha, annotators ({plural(n_multi, 'face')})", _kappa(stats.krippendorff_alpha, n_multi)
    )
    if min(n_model, n_multi) < MIN_KAPPA_FACES:
        st.caption(
            f"No kappa or alpha on fewer than {MIN_KAPPA_FACES} faces: on a handful of faces one vote swings it "
            "from -1 to 1. The number in brackets is how many faces each figure rests on."
        )
    if stats.annotator_pair_faces:
        pairs = [
            {
                "annotator pair": k,
                "shared faces": n,
                "Cohen's kappa": stats.annotator_kappa.get(k) if n >= MIN_KAPPA_FACES else None,
                "note": "" if n >= MIN_KAPPA_FACES else f"no kappa: fewer than {MIN_KAPPA_FACES} shared faces",
            }
            for k, n in stats.annotator_pair_faces.items()
        ]
        st.dataframe(pd.DataFrame(pairs), hide_index=True)
    if stats.ccc:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "field": f,
                        "CCC between annotators": v.get("annotators"),
                        "CCC annotators vs. model": v.get("model"),
                        "faces": v.get("n"),
                    }
                    for f, v in stats.ccc.items()
                ]
            ),
            hide_index=True,
        )


def _exports(ctx: Context, stats: StudyStats) -> None:
    st.subheader("Exports")
    if not ctx.owner:
        st.info("Exports are for the study's owners.")
        return
    store, study, owner = ctx.store, ctx.study, ctx.owner
    crops, feats = stats.counts.get("crops", 0), stats.counts.get("features", 0)
    cols = st.columns(3)
    for i, (fmt, (desc, _suffix, mime)) in enumerate(exports.EXPORT_FORMATS.items()):
        why = None
        if fmt in ("imagefolder", "hf") and not crops:
            why = "No face crops are stored (features-only mode)."
        elif fmt == "features" and not feats:
            why = "No backbone features are stored."
        cols[i % 3].download_button(
            desc,
            data=functools.partial(exports.export_bytes, store, study, fmt, owner=owner),
            file_name=exports.export_file_name(study, fmt),
            mime=mime,
            key=f"{Keys.EXPORT}_{fmt}",
            disabled=why is not None,
            help=why,
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
        )
    cols[len(exports.EXPORT_FORMATS) % 3].download_button(
        "Dataset card (README.md)",
        data=lambda: exports.dataset_card(store, study, owner=owner),
        file_name=exports.export_file_name(study, "csv").replace(".csv", "-README.md"),
        mime="text/markdown",
        key=f"{Keys.EXPORT}_card",
        icon=":material/description:",
        on_click="ignore",
        width="stretch",
    )


def _media(ctx: Context, blind: bool) -> None:
    media = studies.study_media(ctx.store, ctx.study)
    st.subheader(f"Media ({len(media)})")
    if not media:
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": m.id,
                    "file": m.filename,
                    "kind": m.kind,
                    "faces": m.n_faces,
                    "added": m.created_at,
                    **({} if blind else {"uploaded by": m.uploaded_by}),
                }
                for m in media
            ]
        ),
        hide_index=True,
    )
    if not ctx.owner:
        return
    with st.expander("Delete a media item (owners)"):
        names = {m.id: f"{m.id}: {m.filename}" for m in media}
        mid = st.selectbox("Media item", list(names), format_func=names.__getitem__, key=Keys.DELETE_MEDIA)
        sure = st.checkbox(
            "Delete it with its faces, predictions, tracks and every correction; this cannot be undone",
            key=Keys.DELETE_CONFIRM,
        )
        if st.button("Delete", type="primary", disabled=not sure, icon=":material/delete:"):
            try:
                counts = library.delete_media(ctx.store, ctx.study, int(mid), ctx.media_dir, owner=ctx.owner)
            except AffectLabError as exc:
                st.error(f"Not deleted: {code_span(str(exc))}")
                return
            flash(
                "success",
                f"Deleted media {mid}: {plural(counts.get('faces', 0), 'face')}, "
                f"{plural(counts.get('face_annotations', 0), 'face correction')}.",
            )
            st.rerun()


def render() -> None:
    """The Dataset page."""
    ctx = context()
    st.title("Dataset")
    st.caption(f"Study {code_span(ctx.study)}: what is stored, how far people and model agree, and exports.")
    show_flash()
    rules = studies.study_settings(ctx.store, ctx.study)
    blind = rules.independent and not ctx.owner  # one rule for every section below
    with st.spinner("Computing counts and agreement..."):
        stats = exports.study_stats(ctx.store, ctx.study)
    if stats is None or not stats.counts.get("faces"):
        st.info("No faces in this study yet: analyse some files on the Analyze page.")
        _media(ctx, blind)
        return
    _counts(stats, blind, rules)
    if blind:
        st.info(
            "Independent labelling: other annotators' labels, counts and agreement are for the study's owners. "
            "Your own labels are on the Review page (My labels)."
        )
    else:
        _agreement(stats)
    _exports(ctx, stats)
    _media(ctx, blind)


render()
