"""The one declaration of what a browser session keeps: ids and UI state only, never media, faces or models.

Everything lives in one :class:`UIState` object under ``st.session_state["affectlab"]``; pages get it with
:func:`ui_state`. Widget keys are declared here too (:class:`Keys`), so that no page invents session-state names.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

STATE_KEY = "affectlab"


@dataclass
class UIState:
    """A browser session's state.

    Attributes:
        code_ok: The session entered the study access code.
        owner_code_ok: The session entered the owners' code (exports and deletions).
        study: The current study's name.
        annotator: The annotator's name typed in this session (unused when the name comes from the login).
        model: The active emotion model (None: the settings' default).
        analyzed: Media ids of the last analysis, shown on the Analyze page.
        review_by: The review queue's order (``uncertainty``, ``disagreement``, ``valence``).
        review_face: The face under review (None: the queue's first).
        undo_stack: Ids of this session's corrections, newest last, for Undo.
        flash: One message to show once on the next run (``(kind, text)``, kind ``success``/``info``/``warning``).
    """

    code_ok: bool = False
    owner_code_ok: bool = False
    study: str | None = None
    annotator: str = ""
    model: str | None = None
    analyzed: list[int] = field(default_factory=list)
    review_by: str = "uncertainty"
    review_face: int | None = None
    undo_stack: list[int] = field(default_factory=list)
    flash: tuple[str, str] | None = None


class Keys:
    """Widget keys (they live in ``st.session_state`` as Streamlit's own widget state)."""

    ACCESS_CODE = "w_access_code"
    OWNER_CODE = "w_owner_code"
    STUDY = "w_study"
    NEW_STUDY = "w_new_study"
    ANNOTATOR = "w_annotator"
    ANALYZE_MODEL = "w_analyze_model"
    UPLOADS = "w_uploads"
    CAMERA = "w_camera"
    FPS = "w_fps"
    REVIEW_BY = "w_review_by"
    WHOLE_TRACK = "w_whole_track"
    SET_VA = "w_set_va"
    VALENCE = "w_valence"
    AROUSAL = "w_arousal"
    ENGAGEMENT = "w_engagement"
    NOTE = "w_note"
    ACTIVE_MODEL = "w_active_model"
    FETCH_MODEL = "w_fetch_model"
    IMPORT_FILE = "w_import_file"
    IMPORT_NAME = "w_import_name"
    IMPORT_TRUST = "w_import_trust"
    DELETE_MEDIA = "w_delete_media"
    DELETE_CONFIRM = "w_delete_confirm"
    REMOVE_VERSION = "w_remove_version"
    FINETUNE_MODEL = "w_finetune_model"
    FINETUNE_TARGET = "w_finetune_target"


def ui_state(session: MutableMapping[str, Any] | None = None) -> UIState:
    """The session's :class:`UIState`, created on first use.

    Args:
        session: The session-state mapping (default ``st.session_state``).
    """
    if session is None:
        import streamlit as st

        session = st.session_state
    state = session.get(STATE_KEY)
    if not isinstance(state, UIState):
        state = UIState()
        session[STATE_KEY] = state
    return state
