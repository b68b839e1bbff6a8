"""The one declaration of what a browser session keeps: ids and UI state only, never media, faces or models.

Everything lives in one :class:`UIState` object under ``st.session_state["affectlab"]``; pages get it with
:func:`ui_state`. Widget keys are declared here too (:class:`Keys`); per-item widget keys are built from them
(``f"{Keys.VALENCE}_{face_id}"``). No module but this one touches ``st.session_state``: pages read and set a widget's
kept value with :func:`widget_value` and :func:`set_widget_value`.

What must survive a reload (the study, the annotator name when there is no sign-in, the review queue and filters, the
media item opened) is mirrored into the page's URL query (:data:`URL_FIELDS`, :func:`from_url`, :func:`to_url`), so
that a reload or a bookmark brings the same view back; everything a person did (labels, skips, undo) is in the
database, never in the tab.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

STATE_KEY = "affectlab"


@dataclass
class UIState:
    """A browser session's state.

    Attributes:
        client_key: A random id of this session, for AppTest runs only (behind the guard, what a browser may do
            is bound to its signed cookie, never to session state).
        renew_token: After a sign-in behind the guard: the one-time token of the request that gives this browser a
            fresh cookie (``webapp.guard.RENEW_PATH``), "" when none is pending.
        study: The current study's name.
        annotator: The annotator's name typed in this session (unused when the name comes from the login).
        model: The active emotion model (None: the settings' default).
        analyzed: Media ids of the last analysis, shown on the Analyze page.
        analyzed_study: The study of ``analyzed`` when it is not the current one (the samples' study), else None.
        review_by: The review queue's order (``uncertainty``, ``disagreement``, ``valence``).
        review_mode: ``queue`` (faces waiting for this annotator) or ``mine`` (the faces one labelled, to edit).
        review_face: The face under review (None: the queue's first).
        review_mine_after: The page of "My labels" shown: the last face id of the page before (None: the first).
        review_media: Review only this media item's faces (None: all).
        review_track: Review only this track's faces (None: all; a track of ``review_media``).
        review_model_label: Review only faces the model put in this class.
        review_human_label: Review only faces whose human class is this one.
        review_labelled: ``yes``/``no``: only faces with / without a human class ("" for both).
        review_labelled_by: Review only faces this annotator labelled ("" for all).
        review_shown: ``(face id, showing)`` of the face whose controls are live in Review: a label, skip or undo
            carries the pair it was drawn with and is stored only while it is this one; the first action uses it up
            (None), so a key that arrives before the next face is drawn, or a double press, stores nothing.
        review_showing: Counts the faces shown (the second half of ``review_shown``, part of the controls' keys).
        review_filter_seen: The queue and filters the face on screen was chosen under; a change picks a new face.
        review_last: What the annotator's last stored action in Review was ("face 12: class Fear"), repeated when a
            later key is refused so that the refusal does not hide it.
        review_acted: A Review control's callback ran in this interaction (set by the callbacks, read by the panel).
        review_widgets: What the widgets held when the Review panel was last drawn (:func:`widget_snapshot`): a
            panel rerun with no callback and no widget changed was a key for controls no longer drawn, dropped.
        library_media: The media item opened in the library (None: none).
        url_loaded: The URL query was read into this state (once per browser session).
        page_wanted: The page the browser's address named when the session began (``review``...), opened once the
            person is in (after a sign-in step or a server restart), then "".
        flash: One message to show once on the next run (``(kind, text)``, kind ``success``/``info``/``warning``).
        switch_study: A study to select in the sidebar on the next run (after "Try a sample"), then None.
    """

    client_key: str = ""
    renew_token: str = ""
    study: str | None = None
    annotator: str = ""
    model: str | None = None
    analyzed: list[int] = field(default_factory=list)
    analyzed_study: str | None = None
    review_by: str = "uncertainty"
    review_mode: str = "queue"
    review_face: int | None = None
    review_mine_after: int | None = None
    review_media: int | None = None
    review_track: int | None = None
    review_model_label: str = ""
    review_human_label: str = ""
    review_labelled: str = ""
    review_labelled_by: str = ""
    review_shown: tuple[int, int] | None = None
    review_showing: int = 0
    review_filter_seen: str = ""
    review_last: str = ""
    review_acted: bool = False
    review_widgets: str = ""
    library_media: int | None = None
    url_loaded: bool = False
    page_wanted: str = ""
    flash: tuple[str, str] | None = None
    switch_study: str | None = None


URL_FIELDS: dict[str, str] = {
    "study": "study",
    "annotator": "annotator",
    "review_by": "queue",
    "review_mode": "mode",
    "review_media": "media",
    "review_track": "track",
    "review_model_label": "model_class",
    "review_human_label": "human_class",
    "review_labelled": "labelled",
    "review_labelled_by": "by",
    "review_face": "face",
    "library_media": "open",
    "analyzed": "analyzed",
}
"""State field -> URL query parameter, for what survives a reload."""

_INT_FIELDS = ("review_media", "review_track", "review_face", "library_media")
_CHOICES = {
    "review_by": ("uncertainty", "disagreement", "valence"),
    "review_mode": ("queue", "mine"),
    "review_labelled": ("", "yes", "no"),
}


def from_url(state: UIState, query: Mapping[str, str], *, annotator_from_url: bool = True) -> None:
    """Reads the URL query into ``state`` (invalid values are ignored; the annotator only without sign-in)."""
    for name, param in URL_FIELDS.items():
        raw = query.get(param)
        if raw is None or (name == "annotator" and not annotator_from_url):
            continue
        raw = str(raw)[:200]
        if name in _INT_FIELDS:
            if raw.isdigit():
                setattr(state, name, int(raw))
        elif name == "analyzed":
            state.analyzed = [int(x) for x in raw.split(",") if x.isdigit()][:50]
        elif name in _CHOICES:
            if raw in _CHOICES[name]:
                setattr(state, name, raw)
        else:
            setattr(state, name, raw.strip())
    state.url_loaded = True


def to_url(state: UIState, *, annotator_in_url: bool = True) -> dict[str, str]:
    """The URL query that brings ``state`` back (defaults and empty values left out)."""
    out: dict[str, str] = {}
    default = UIState()
    for name, param in URL_FIELDS.items():
        value = getattr(state, name)
        if value == getattr(default, name) or value in (None, "", []):
            continue
        if name == "annotator" and not annotator_in_url:
            continue
        out[param] = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return out


class Keys:
    """Widget keys (they live in ``st.session_state`` as Streamlit's own widget state).

    Per-item keys add the item's id or name: ``f"{Keys.REVIEW_CLASS}_{label}"``. Charts' keys are element ids
    without state and stay beside their charts.
    """

    ACCESS_CODE = "w_access_code"
    ACCESS_ENTER = "w_access_enter"
    SIGN_IN = "w_sign_in"
    GATE_SIGN_OUT = "w_gate_sign_out"
    """The sign-in widgets: all a signed-out browser may send values of (``guard.SIGNED_OUT_WIDGET_KEYS``)."""
    OWNER_CODE = "w_owner_code"
    OWNER_CODE_ENTER = "w_owner_code_enter"
    STUDY = "w_study"
    TRY_SAMPLE = "w_try_sample"
    NEW_STUDY = "w_new_study"
    ANNOTATOR = "w_annotator"
    ANALYZE_MODEL = "w_analyze_model"
    UPLOADS = "w_uploads"
    CAMERA = "w_camera"
    FPS = "w_fps"
    GALLERY_PRESET = "w_gallery_preset"
    MIN_FACE_SIZE = "w_min_face_size"
    REVIEW_BY = "w_review_by"
    REVIEW_MODE = "w_review_mode"
    REVIEW_MEDIA = "w_review_media"
    REVIEW_TRACK = "w_review_track"
    REVIEW_MODEL_LABEL = "w_review_model_label"
    REVIEW_HUMAN_LABEL = "w_review_human_label"
    REVIEW_LABELLED = "w_review_labelled"
    REVIEW_LABELLED_BY = "w_review_labelled_by"
    REVIEW_MINE = "w_review_mine"
    REVIEW_MINE_NEXT = "review_mine_next"
    REVIEW_MINE_FIRST = "review_mine_first"
    STUDY_INDEPENDENT = "w_study_independent"
    STUDY_HIDE_MODEL = "w_study_hide_model"
    STUDY_DOUBLE_SHARE = "w_study_double_share"
    STUDY_BLUR_FACES = "w_study_blur_faces"
    TRACK_CLASS = "w_track_class"
    LIBRARY_OPEN = "w_library_open"
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
    PHONE_MODEL = "w_phone_model"
    PHONE_FORMAT = "w_phone_format"
    PHONE_INT8 = "w_phone_int8"
    CLASSROOM_MEDIA = "classroom_media"
    CLASSROOM_BLUR_FACES = "classroom_blur_faces"
    CLASSROOM_CSV = "classroom_csv"
    CLASSROOM_FIGURE = "classroom_figure"
    CLASSROOM_FIGURE_VALUE = "classroom_figure_value"
    CLASSROOM_FIGURE_STUDENTS = "classroom_figure_students"
    CLASSROOM_FIGURE_OPEN = "classroom_figure_open"
    ROSTER_MEDIA = "roster_media"
    ROSTER_CSV = "roster_csv"
    ROSTER_ASSIGN = "roster_assign_csv"
    ROSTER_ALLOW = "roster_allow"
    CLASS_DOWNLOAD = "dl"
    CLASSROOM_STUDY_FORMAT = "classroom_study_format"
    CLASSROOM_RECORDINGS_CSV = "classroom_recordings_csv"
    CODE_SIGN_OUT = "code_sign_out"
    EXPORT = "export"
    QUICK_CORRECT = "qc"
    PLAY_FROM = "start"
    TRACK_PAGE = "track_page"
    REVIEW_CLASS = "cls"
    STRIP_OPEN = "strip"
    APPLY_TRACK = "apply_track"
    SAVE_EXTRAS = "save_extras"
    SKIP = "skip"
    UNDO = "undo"
    UNSKIP = "unskip"
    NAME_PROMPT = "w_name_prompt"


def widget_value(key: str) -> Any:
    """The value Streamlit keeps for the widget ``key`` (a :class:`Keys` name), None before the widget was drawn."""
    import streamlit as st

    return st.session_state.get(key)


def set_widget_value(key: str, value: Any) -> None:
    """Sets what the widget ``key`` shows on its next drawing (call before it is drawn in this run)."""
    import streamlit as st

    st.session_state[key] = value


def widget_snapshot(ignore: tuple[str, ...] = ()) -> str:
    """A digest of every keyed widget's value, to tell whether an interaction changed any.

    Keys starting with ``ignore`` are left out (buttons: True only in the run they were pressed).
    """
    import hashlib

    import streamlit as st

    items = sorted(
        (str(k), repr(v)) for k, v in st.session_state.items() if k != STATE_KEY and not str(k).startswith(ignore)
    )
    return hashlib.sha256(repr(items).encode()).hexdigest()


def ui_state(session: MutableMapping[str, Any] | None = None) -> UIState:
    """The session's :class:`UIState`, created on first use.

    Args:
        session: The session-state mapping (default ``st.session_state``).
    """
    if session is None:
        import streamlit as st

        mapping: MutableMapping[Any, Any] = st.session_state
    else:
        mapping = session
    state = mapping.get(STATE_KEY)
    if not isinstance(state, UIState):
        state = UIState()
        mapping[STATE_KEY] = state
    return state
