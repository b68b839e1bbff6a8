"""Process-wide resources, loaded once and shared by every session: the label store, the models.

These are the only ``st.cache_resource`` functions of AffectLab. Each is keyed by everything it depends on (database
URL; model, weights folder and device), so changing a setting loads a new one instead of reusing a stale one.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.settings import Settings
from db.services import LabelStore

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession


_SETTLED = {"modules": 0}
"""How many modules the process had imported when its heap was last frozen (:func:`settle_heap`)."""


def settle_heap() -> bool:
    """Moves what the process has loaded so far out of the garbage collector's full passes (``gc.freeze``).

    Streamlit runs ``gc.collect(2)`` after every script run: over the ~200,000 objects of the imported modules
    (plotly, pandas, SQLAlchemy, the app) that held the GIL for 60-600 ms after each page and each Review key press,
    while the run's last messages waited to be sent. Called at the end of a run, it collects and freezes once per
    wave of imports (a page's first visit in this process imports its modules); later passes then see only what
    runs create. Returns whether it froze now.
    """
    if len(sys.modules) == _SETTLED["modules"]:
        return False
    gc.collect()
    gc.freeze()
    _SETTLED["modules"] = len(sys.modules)
    return True


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
