"""Process-wide resources, loaded once and shared by every session: the label store, the models.

These are the only ``st.cache_resource`` functions of AffectLab. Each is keyed by everything it depends on (database
URL; model, weights folder and device), so changing a setting loads a new one instead of reusing a stale one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.settings import Settings
from db.services import LabelStore

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession


def settings() -> Settings:
    """The settings, read from the environment now (cheap)."""
    return Settings.from_env()


@st.cache_resource(show_spinner="Opening the database...")
def _store(url: str, store_crops: bool, data_dir: str) -> LabelStore:
    store = LabelStore(url, store_crops=store_crops, data_dir=Path(data_dir))
    store.upgrade()  # a fresh data folder gets its schema; an up-to-date one is left as it is
    return store


def label_store(s: Settings) -> LabelStore:
    """The label store of the settings, migrated to the newest schema on first use."""
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    return _store(s.database_url, s.store_crops, str(Path(s.data_dir).resolve()))


@st.cache_resource(show_spinner="Loading the face detector, the emotion and engagement models (first time only)...")
def analysis_session(model: str, weights_dir: str, device: str, backend: str, detect_every: int) -> AnalysisSession:
    """The models for ``(model, weights_dir, device, backend, detect_every)``: detector, emotion, engagement.

    One session serves every browser session (it holds no per-request state); the analyze path uses it for images
    and videos alike. The page passes the run's settings (``Settings.backend``, ``Settings.detect_every``).

    Raises:
        WeightsMissingError: The model's weights are absent (nothing is cached then).
    """
    from models.analysis import AnalysisSession

    return AnalysisSession.open(
        model,
        weights_dir,
        device=device,
        backend="onnx" if backend == "onnx" else "torch",  # the settings allow only these two
        detect_every=detect_every,
    )


def forget_models() -> None:
    """Drops the cached models (after weights were fetched or imported, so that the new files are used)."""
    analysis_session.clear()


def media_dir(s: Settings) -> Path | None:
    """Where uploaded media are kept, None in the features-only privacy mode."""
    return Path(s.data_dir).resolve() / "media" if s.store_crops else None
