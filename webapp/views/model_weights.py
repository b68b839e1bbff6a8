"""Models: the registered checkpoints, which are present, fetch or import weights, the active model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from models.errors import AffectLabError, HashMismatchError
from models.registry import app_models, emotion_models, get_spec
from webapp import figures, guard, resources
from webapp.services import weights
from webapp.state import Keys, ui_state
from webapp.ui import Context, code_span, context, flash, show_flash

TRUST_HELP = (
    "The published .pt checkpoints are pickled Python objects, and loading a pickle runs code. AffectLab only "
    "unpickles a file whose hash matches the registry's (that is the published file). Tick this only for a file "
    "you know the origin of, e.g. your own fine-tuned copy: it will be unpickled once, converted to safetensors "
    "and marked unverified."
)


def _table(ctx: Context) -> list[dict]:
    rows = weights.model_status(ctx.weights_dir)
    df = pd.DataFrame(
        [
            {
                "model": r["name"],
                "present": r["present"],
                "verified": r["verified"],
                "format": r["fmt"],
                "classes": r["classes"],
                "valence/arousal": r["has_va"],
                "runnable": r["runnable"],
                "note": r["note"],
            }
            for r in rows
        ]
    )
    st.dataframe(df, hide_index=True)
    return rows


def _active(ctx: Context) -> None:
    present = weights.present_models(ctx.weights_dir)
    st.subheader("Active model")
    if not present:
        st.warning(weights.missing_weights_help(ctx.settings.model, ctx.weights_dir))
        return
    state = ui_state()
    current = (
        state.model if state.model in present else (ctx.settings.model if ctx.settings.model in present else present[0])
    )
    state.model = st.selectbox("Used on the Analyze page", present, index=present.index(current), key=Keys.ACTIVE_MODEL)


def _fetch(ctx: Context, rows: list[dict]) -> None:
    st.subheader("Fetch")
    missing = [r["name"] for r in rows if not r["present"] and r["runnable"]]
    if not missing:
        st.caption("Every runnable checkpoint is present.")
        return
    default = ctx.settings.model if ctx.settings.model in missing else missing[0]
    name = st.selectbox(
        "Checkpoint to download (hash-checked)", missing, index=missing.index(default), key=Keys.FETCH_MODEL
    )
    st.caption(f"Same as `python -m models fetch {name}`. Needs internet access (GitHub).")
    if st.button("Fetch", type="primary", icon=":material/download:"):
        with st.status(f"Downloading {name}...", expanded=True) as status:
            bar = st.progress(0.0, text="connecting...")

            def report(p: weights.FetchProgress) -> None:
                done = f"{p.received / 1e6:.1f} MB"
                if p.total:
                    bar.progress(min(p.received / p.total, 1.0), text=f"{done} of {p.total / 1e6:.1f} MB")
                else:
                    bar.progress(0.0, text=f"{done} received")

            try:
                weights.fetch_weights(
                    name, ctx.weights_dir, report, owner=ctx.global_owner, mirror=ctx.settings.weights_mirror
                )
            except AffectLabError as exc:
                status.update(label=f"Fetching {name} failed", state="error")
                st.error(code_span(str(exc)))
                return
            status.update(label=f"{name} fetched and verified", state="complete")
        resources.forget_models()
        flash("success", f"{name} is ready.")
        st.rerun()


def _import(ctx: Context) -> None:
    st.subheader("Import a downloaded file")
    up = st.file_uploader("Checkpoint file (.pt, .onnx, .h5)", type=["pt", "pth", "onnx", "h5"], key=Keys.IMPORT_FILE)
    names = weights.registry_names()
    default = names.index(ctx.settings.model) if ctx.settings.model in names else 0
    name = st.selectbox("Registry name it is", names, index=default, key=Keys.IMPORT_NAME)
    trust = st.checkbox(
        "Trust a file whose hash differs from the registry's (unverified)", key=Keys.IMPORT_TRUST, help=TRUST_HELP
    )
    if trust:
        st.warning(TRUST_HELP)
    if st.button("Import", disabled=up is None, icon=":material/upload_file:") and up is not None:
        with st.spinner(f"Checking the hash and converting {name}..."):
            try:
                path = weights.import_weights(
                    guard.upload_bytes(up),
                    up.name,
                    name,
                    ctx.weights_dir,
                    trust_unverified=trust,
                    owner=ctx.global_owner,
                )
            except HashMismatchError as exc:
                st.error(
                    f"{code_span(up.name)} is not the published {name}: its hash {exc.actual} differs from the "
                    f"registry's {exc.expected}. Nothing was stored."
                )
                return
            except AffectLabError as exc:
                st.error(f"{code_span(up.name)}: {code_span(str(exc))}")
                return
        resources.forget_models()
        flash("success", f"Imported {name} into {path}.")
        st.rerun()


def _versions(ctx: Context) -> None:
    st.subheader("Fine-tuned versions")
    versions = weights.model_versions(ctx.weights_dir)
    if not versions:
        st.caption("None yet. Fine-tune on this study's corrections below.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "version": v.name,
                    "base": v.base,
                    "target": v.target,
                    "created": v.created_at[:19],
                    "weights hash": v.weights_hash,
                    "faces": v.report.get("n_faces"),
                    "verdict": v.report.get("message", ""),
                }
                for v in versions
            ]
        ),
        hide_index=True,
    )
    if ctx.global_owner:
        name = st.selectbox("Version", [v.name for v in versions], key=Keys.REMOVE_VERSION)
        if st.button("Remove this version", icon=":material/delete:"):
            weights.remove_version(name, ctx.weights_dir, owner=ctx.global_owner)
            resources.forget_models()
            flash("success", f"Removed {name}. Predictions it made keep its name and hash.")
            st.rerun()


def _phone_export(ctx: Context) -> None:
    st.subheader("Export for phones")
    names = weights.present_models(ctx.weights_dir)
    if not names:
        return
    name = st.selectbox("Model or fine-tuned version", names, key=Keys.PHONE_MODEL)
    fmt = st.radio("Format", weights.PHONE_FORMATS, horizontal=True, key=Keys.PHONE_FORMAT)
    int8 = st.checkbox(
        "int8 (smaller and faster; calibrated on this study's face crops, agreement with fp32 reported)",
        disabled=fmt not in ("onnx", "litert"),
        key=Keys.PHONE_INT8,
    )
    st.caption(
        "The file is checked in its own runtime against the PyTorch model on face crops before it is offered. Same as "
        + code_span(f"python -m models export {name} --format {fmt}" + (" --int8" if int8 else ""))
        + "."
    )
    if not st.button("Export", icon=":material/phone_android:"):
        return
    with st.spinner(f"Converting {name} to {fmt} and checking it..."):
        try:
            out = weights.export_for_phone(
                ctx.store,
                ctx.study,
                name,
                fmt,
                bool(int8 and fmt in ("onnx", "litert")),
                ctx.weights_dir,
                owner=ctx.owner,
                python=ctx.settings.mobile_python,
            )
        except AffectLabError as exc:
            st.error(code_span(str(exc)))
            return
    for line in out.lines:
        st.caption(line)
    st.download_button(f"Download {out.filename}", out.data, file_name=out.filename, icon=":material/download:")


def _finetune(ctx: Context) -> None:
    st.subheader("Fine-tune on this study's corrections")
    base = [n for n in weights.present_models(ctx.weights_dir) if "@" not in n]
    if not base:
        return
    name = st.selectbox("Base model", base, key=Keys.FINETUNE_MODEL)
    targets = [t for t in weights.FINETUNE_TARGETS if t != "va" or get_spec(name).has_va]
    target = st.radio("Target", targets, horizontal=True, key=Keys.FINETUNE_TARGET)
    st.caption(
        "Trains a new head on the stored features of the faces people corrected (the backbone stays frozen) "
        "and compares it with the original on held-out media items. Same as "
        + code_span(f"python -m affectlab finetune --study '{ctx.study}' --target {target} --model {name}")
        + "."
    )
    if not st.button("Fine-tune", type="primary", icon=":material/model_training:"):
        return
    with st.spinner("Cross-validating and training the new head..."):
        try:
            outcome = weights.finetune(
                ctx.store,
                ctx.study,
                lambda: resources.analysis_session(
                    name, str(ctx.weights_dir), ctx.settings.device, ctx.settings.backend, ctx.settings.detect_every
                ),
                target,
                ctx.weights_dir,
                owner=ctx.global_owner,
            )
        except AffectLabError as exc:
            st.error(code_span(str(exc)))
            return
    report = outcome.report
    for note in outcome.notes:
        st.caption(note)
    if not report.enough:
        st.warning(report.message)
        return
    (st.success if report.improved else st.info)(report.message)
    metrics = [k for k, v in report.before.items() if isinstance(v, int | float)]
    st.dataframe(
        pd.DataFrame(
            {
                "metric": metrics,
                "original": [report.before[k] for k in metrics],
                "fine-tuned": [report.after[k] for k in metrics],
            }
        ),
        hide_index=True,
    )
    matrices = weights.confusion_matrices(report)
    if matrices is not None:
        left, right = st.columns(2)
        left.plotly_chart(figures.confusion_heatmap(report.classes, matrices[0], "Original head on held-out faces"))
        right.plotly_chart(figures.confusion_heatmap(report.classes, matrices[1], "Fine-tuned head on held-out faces"))
    if outcome.version is not None:
        resources.forget_models()
        st.success(
            f"Saved as {outcome.version.name}: listed above under Fine-tuned versions; pick it as the active "
            "model to use it."
        )


def render() -> None:
    """The Models page."""
    ctx = context()
    st.title("Models")
    where = f"Weights folder: {code_span(str(ctx.weights_dir))} (AFFECTLAB_WEIGHTS_DIR). " if ctx.global_owner else ""
    st.caption(where + "Emotion models: " + ", ".join(s.name for s in emotion_models()) + ".")
    app = app_models(ctx.settings.model)
    missing = weights.missing_app_models(ctx.settings.model, ctx.weights_dir)
    st.caption(
        f"The app uses {', '.join(code_span(n) for n in app)} (emotions; engagement of video tracks): "
        + (f"missing {', '.join(code_span(n) for n in missing)}; " if missing else "all present; ")
        + "`python -m models fetch --defaults` fetches them."
    )
    show_flash()
    rows = _table(ctx)
    active = st.container()
    if not ctx.global_owner:
        with active:
            _active(ctx)
        st.info("Fetching, importing, fine-tuning and removing models is for global owners: models serve every study.")
        return
    versions = st.container()
    _fetch(ctx, rows)
    _import(ctx)
    _phone_export(ctx)
    _finetune(ctx)
    # drawn last, in their places above: a version fine-tuned in this very run is listed and selectable at once
    with active:
        _active(ctx)
    with versions:
        _versions(ctx)


render()
