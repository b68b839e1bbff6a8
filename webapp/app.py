"""AffectLab's Streamlit entry point: sign-in gate, sidebar (study, annotator), and the page router.

Run with ``make run`` or ``streamlit run webapp/app.py --server.address 127.0.0.1``. Pages live in
``webapp/views/``; each is thin and calls :mod:`webapp.services`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run webapp/app.py` puts webapp/, not the repository, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from affectlab.settings import Settings  # noqa: E402
from db.services import LabelStore  # noqa: E402
from webapp import resources, services  # noqa: E402
from webapp.access import AccessConfig, load_access_config  # noqa: E402
from webapp.state import Keys, UIState, from_url, ui_state  # noqa: E402
from webapp.ui import Context, code_span, remember_in_url, set_context  # noqa: E402

NEW_STUDY = "+ New study..."


def _secrets() -> Mapping[str, Any]:
    """``st.secrets`` (read lazily; a missing secrets file reads as empty in :mod:`webapp.access`)."""
    return st.secrets


def _signed_in_identity() -> str | None:
    user = st.user
    if not user.get("is_logged_in"):
        return None
    return str(user.get("email") or user.get("preferred_username") or user.get("name") or user.get("sub") or "") or None


def _gate(access: AccessConfig, state: UIState) -> str | None:
    """Shows the sign-in step when needed; returns the signed-in identity. Stops the run while signed out."""
    if access.mode == "closed":
        st.title("AffectLab")
        st.error(
            f"Sign-in is not configured: {access.reason}. Faces of study participants are personal data, so nothing "
            "is shown. Set AFFECTLAB_ACCESS_CODE (a study access code), or add an [auth] section to the secrets for "
            "OpenID Connect login (st.login, e.g. Hugging Face OAuth). On a trusted network only, "
            "AFFECTLAB_ALLOW_OPEN=1 turns this check off."
        )
        st.stop()
    if access.mode == "oidc":
        who = _signed_in_identity()
        if who is None:
            st.title("AffectLab")
            st.info("Sign in to see and annotate the studies.")
            if st.button("Sign in", type="primary", icon=":material/login:"):
                try:
                    st.login()
                except Exception as exc:  # e.g. Authlib missing, or an incomplete [auth] section
                    st.error(f"Sign-in failed: {exc}")
            st.stop()
        if not access.may_enter(who):
            st.title("AffectLab")
            st.error(f"{code_span(who)} is not on this deployment's list of annotators; ask a study owner to add you.")
            st.button("Sign out", on_click=st.logout)
            st.stop()
        return who
    if access.mode == "code" and not state.code_ok:
        st.title("AffectLab")
        with st.form("access"):
            code = st.text_input("Study access code", type="password", key=Keys.ACCESS_CODE)
            if st.form_submit_button("Enter", type="primary"):
                if access.check_code(code):
                    state.code_ok = True
                    st.rerun()
                st.error("That code is not right.")
        st.stop()
    return None


def _sidebar_study(access: AccessConfig, state: UIState, store: LabelStore, who: str | None) -> str:
    names = [s.name for s in services.list_studies(store)]
    if access.default_study not in names:
        names.insert(0, access.default_study)
    if state.study and state.study not in names:
        names.append(state.study)
    names = [n for n in names if access.mode in ("local", "code") or access.may_annotate(who, n)]
    current = state.study if state.study in names else (names[0] if names else access.default_study)
    choice = st.sidebar.selectbox("Study", [*names, NEW_STUDY], index=[*names, NEW_STUDY].index(current),
                                  key=Keys.STUDY, help="Results and labels are stored per study.")  # fmt: skip
    if choice == NEW_STUDY:
        new = st.sidebar.text_input("New study name", key=Keys.NEW_STUDY, max_chars=200).strip()
        if new:
            state.study = new
            return new
        return current
    state.study = choice
    return choice


def _sidebar_annotator(access: AccessConfig, state: UIState, who: str | None, study: str) -> str | None:
    if access.mode == "oidc":
        st.sidebar.markdown(f"Signed in as {code_span(who or '')}")
        st.sidebar.button("Sign out", on_click=st.logout, icon=":material/logout:")
        return who if access.may_annotate(who, study) else None
    name = st.sidebar.text_input("Your name (annotator)", value=state.annotator, key=Keys.ANNOTATOR,
                                 placeholder="needed before your first correction", max_chars=200)  # fmt: skip
    state.annotator = name.strip()
    if not state.annotator:
        return None
    if not access.may_annotate(state.annotator, study):
        st.sidebar.error(f"{code_span(state.annotator)} is not on the annotator list of this study.")
        return None
    return state.annotator


def main() -> None:
    """Runs one script run of the app."""
    st.set_page_config(page_title="AffectLab", page_icon=":material/sentiment_satisfied:", layout="wide")
    s = resources.settings()
    state = ui_state()
    access = load_access_config(Settings.from_env(), _secrets(), st.get_option("server.address"))
    if not state.url_loaded:  # a reload or a bookmark: bring back the study, name, queue and open item
        from_url(state, st.query_params, annotator_from_url=access.mode != "oidc")
    who = _gate(access, state)
    store = resources.label_store(s)
    study = _sidebar_study(access, state, store, who)
    if access.mode == "oidc" and not access.may_annotate(who, study):
        st.error(f"You are not on the list of study {code_span(study)}; choose another study.")
        st.stop()
    annotator = _sidebar_annotator(access, state, who, study)
    if access.mode == "code" and access.owner_code and not state.owner_code_ok:
        with st.sidebar.expander("Owner access"):
            code = st.text_input("Owners' code (exports, deletions)", type="password", key=Keys.OWNER_CODE)
            if code and access.check_code(code, owner=True):
                state.owner_code_ok = True
                st.rerun()
    owner = access.is_owner(who or annotator, study, owner_code_ok=state.owner_code_ok)
    set_context(Context(settings=s, access=access, store=store, study=study, who=who, annotator=annotator,
                        owner=owner, media_dir=resources.media_dir(s)))  # fmt: skip
    views = Path(__file__).parent / "views"
    pages = [
        st.Page(views / "analyze.py", title="Analyze", icon=":material/add_a_photo:", url_path="analyze", default=True),
        st.Page(views / "review.py", title="Review", icon=":material/rate_review:", url_path="review"),
        st.Page(views / "library.py", title="Library", icon=":material/video_library:", url_path="library"),
        st.Page(views / "dataset.py", title="Dataset", icon=":material/dataset:", url_path="dataset"),
        st.Page(views / "classroom.py", title="Classroom", icon=":material/school:", url_path="classroom"),
        st.Page(views / "model_weights.py", title="Models", icon=":material/memory:", url_path="models"),
    ]
    st.navigation(pages).run()
    remember_in_url()


main()
