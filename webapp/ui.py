"""Shared pieces of the pages: the run's context (who, which study, what they may do) and safe text rendering."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.settings import Settings
from core.text import plural
from db.services import LabelStore
from webapp.access import AccessConfig

__all__ = [
    "Context",
    "code_span",
    "context",
    "file_error",
    "flash",
    "plural",
    "remember_in_url",
    "set_context",
    "show_flash",
]

_local = threading.local()


@dataclass(frozen=True)
class Context:
    """What a page needs to know about this run.

    Attributes:
        settings: The runtime settings.
        access: The access rules.
        store: The label store.
        study: The current study.
        who: The signed-in identity (login email or name), or the typed annotator name, or None.
        annotator: The name corrections are recorded under, None until known (and allowed).
        owner: Whether this session may export and delete in the study.
        media_dir: Where media files are kept (None in features-only mode).
        global_owner: Whether this session may manage what serves every study (weights, fine-tuned versions):
            :meth:`webapp.access.AccessConfig.is_global_owner`, never the owner of one study.
    """

    settings: Settings
    access: AccessConfig
    store: LabelStore
    study: str
    who: str | None
    annotator: str | None
    owner: bool
    media_dir: Path | None
    global_owner: bool = False

    @property
    def weights_dir(self) -> Path:
        """The weights folder."""
        return Path(self.settings.weights_dir).expanduser()


def set_context(ctx: Context) -> None:
    """Makes ``ctx`` the context of this script run (the main script sets it before running the page)."""
    _local.ctx = ctx


def context() -> Context:
    """The context the main script set for this run.

    Raises:
        RuntimeError: When a page script runs without the main script (run ``streamlit run webapp/app.py``).
    """
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        raise RuntimeError("run the app with `streamlit run webapp/app.py`, not a page script on its own")
    return ctx


def code_span(text: str) -> str:
    """Markdown that shows ``text`` literally, as inline code (no markdown, HTML or emoji codes interpreted)."""
    clean = str(text).replace("\n", " ").replace("\r", " ")
    longest = run = 0
    for ch in clean:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if clean.startswith("`") or clean.endswith("`") or not clean.strip() else ""
    return f"{fence}{pad}{clean}{pad}{fence}"


def file_error(file: str, reason: str) -> None:
    """``st.error`` naming a file (as literal text) and the reason."""
    st.error(f"{code_span(file)}: {reason}", icon=":material/error:")


def flash(kind: str, text: str) -> None:
    """Shows a message once on the next run (after ``st.rerun``)."""
    from webapp.state import ui_state

    ui_state().flash = (kind, text)


def show_flash() -> None:
    """Shows and forgets the pending one-time message."""
    from webapp.state import ui_state

    state = ui_state()
    if state.flash is None:
        return
    kind, text = state.flash
    state.flash = None
    {"success": st.success, "warning": st.warning, "error": st.error}.get(kind, st.info)(text)


def remember_in_url() -> None:
    """Mirrors what survives a reload (study, annotator without sign-in, queue, filters, open item) into the URL."""
    from webapp.state import to_url, ui_state

    ctx = getattr(_local, "ctx", None)
    want = to_url(ui_state(), annotator_in_url=ctx is None or ctx.access.mode != "oidc")
    have = {k: st.query_params.get(k) for k in st.query_params}
    if have != want:
        st.query_params.from_dict(want)
