"""AffectLab's Streamlit entry point: sign-in gate, sidebar (study, annotator), and the page router.

Run with ``make run`` or ``streamlit run webapp/app.py --server.address 127.0.0.1``. Pages live in
``webapp/views/``; each is thin and calls the :mod:`webapp.services` module of its concern.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

from db.services import LabelStore
from webapp import guard, resources
from webapp.access import THROTTLE, AccessConfig, CodeGrant, kinds_of, kinds_still_closed, load_access_config
from webapp.services import demo, studies
from webapp.state import Keys, UIState, from_url, set_widget_value, ui_state
from webapp.ui import Context, code_span, remember_in_url, set_context

NEW_STUDY = "+ New study..."
LAYOUT_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 3.25rem; padding-bottom: 2rem; }
[data-testid="stMainBlockContainer"] h1 { padding-top: 0.25rem; padding-bottom: 0.25rem; }
[data-testid="stButtonGroup"] div:has(> button) { flex-wrap: wrap; row-gap: 0.4rem; }
</style>"""
"""Less empty space above each page, so that Review's crop, class keys, Skip and Undo fit 1280x720; pills (Analyze's
corrections) wrap onto a second row instead of hiding the classes that do not fit."""
log = logging.getLogger("affectlab.app")


PAGES = {
    "analyze": ("Analyze", ":material/add_a_photo:"),
    "review": ("Review", ":material/rate_review:"),
    "library": ("Library", ":material/video_library:"),
    "dataset": ("Dataset", ":material/dataset:"),
    "classroom": ("Classroom", ":material/school:"),
    "roster": ("Roster", ":material/groups:"),
    "models": ("Models", ":material/memory:"),
}
"""URL path -> (title, icon) of each page; the file is ``webapp/views/<name>.py`` (``models``: model_weights.py)."""


def _page_from_address(state: UIState) -> str:
    """The page a bookmark or link names: its path, else the item it opens (``open``: Library, ``face``: Review)."""
    try:
        url = st.context.url or ""
    except Exception:  # no browser (AppTest)
        url = ""
    path = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    if path in PAGES:
        return path
    if state.library_media is not None:
        return "library"
    if state.review_face is not None:
        return "review"
    return ""


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
        _end_session()
        st.stop()
    if access.mode == "oidc":
        who = _signed_in_identity()
        if who is None:
            _forget_browser()  # signed out (or never in): its uploads stop too
            _end_session()
            st.title("AffectLab")
            st.info("Sign in to see and annotate the studies.")
            if st.button("Sign in", type="primary", icon=":material/login:", key=Keys.SIGN_IN):
                try:
                    st.login()
                except Exception as exc:  # e.g. Authlib missing, or an incomplete [auth] section
                    st.error(f"Sign-in failed: {code_span(str(exc))}")
            st.stop()
        if not access.may_enter(who):
            st.title("AffectLab")
            st.error(f"{code_span(who)} is not on this deployment's list of annotators; ask a study owner to add you.")
            st.button("Sign out", on_click=st.logout, key=Keys.GATE_SIGN_OUT)
            _end_session()
            st.stop()
        return who
    return None


def _under_test() -> bool:
    """Whether this run is Streamlit's AppTest (no server, no network, no cookies)."""
    from streamlit import config

    return bool(config.get_option("global.appTest"))


def _browser() -> tuple[str | None, guard.GrantStore | None]:
    """The key this browser's sign-in is bound to, and where grants live; re-read on every run.

    Behind the guard (``webapp/serve.py``) the key is the browser id of the signed ``affectlab_session`` cookie, read
    from this connection's request (``st.context.cookies``): a session id replayed from another client has none.
    Under AppTest the key is the session. Otherwise (``streamlit run webapp/app.py``) there is no credential.
    """
    g = guard.active()
    if g is not None:
        return _guard_bid(g), g.grants
    if _under_test():
        state = ui_state()
        if not state.client_key:
            state.client_key = secrets.token_urlsafe(16)
        return f"test-session:{state.client_key}", guard.TEST_GRANTS
    return None, None


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def _guard_bid(g: guard.GuardState) -> str | None:
    """This run's browser id behind the guard: its session's (renewed at sign-in), else its cookie's."""
    return g.browser_of(_session_id(), st.context.cookies.get(guard.COOKIE))


def _renew_cookie() -> None:
    """After a sign-in: an invisible image whose request gives this browser a fresh cookie (until it has one)."""
    g = guard.active()
    state = ui_state()
    if g is None or not state.renew_token:
        return
    if g.renewed(state.renew_token):
        state.renew_token = ""
        return
    st.html(
        f'<img src="{guard.RENEW_PATH}?t={state.renew_token}" alt="" width="1" height="1" '
        'style="position:absolute;opacity:0">'
    )


def _end_session() -> None:
    """Forgets this session's fragments, callbacks and state (at sign-out and at every run that stops signed out).

    A fragment or a widget callback registered while signed in would otherwise stay reachable by the session
    (the guard also drops fragment reruns and other widgets' values from signed-out browsers).
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return
    ctx.fragment_storage.clear()
    client_key = ui_state().client_key  # AppTest's stand-in for the cookie: it outlives a sign-out, as a cookie does
    st.session_state.clear()
    ui_state().client_key = client_key
    try:  # widget metadata holds the callbacks; SessionState.clear keeps it
        ctx.session_state._state._new_widget_state.widget_metadata.clear()
    except AttributeError:
        log.warning("could not clear the widget callbacks of a signed-out session (Streamlit changed)")


def _client_id(key: str | None) -> str:
    """Who wrong codes are counted against: the client address the guard set, else the browser or session."""
    if guard.active() is not None:
        address = st.context.headers.get("X-Forwarded-For")
        if address:
            return address
    return key or f"session:{id(ui_state())}"


def _code_form(
    access: AccessConfig,
    key: str | None,
    grants: guard.GrantStore | None,
    *,
    label: str,
    form_key: str,
    widget_key: str,
    enter_key: str,
) -> None:
    """An access-code form: a right code adds its grant to this browser; a wrong one waits longer each time.

    Wrong codes are counted per client address and per code kind (:class:`webapp.access.CodeThrottle`); a right
    code clears its own kind's count only (an annotator's own code does not reset its guesses at the owners' code); a
    count is forgotten an hour after its last failure.
    """
    with st.form(form_key):
        code = st.text_input(label, type="password", key=widget_key)
        if not st.form_submit_button("Enter", type="primary", key=enter_key):
            return
    if key is None or grants is None:
        st.error(
            "This browser sent no sign-in cookie, so a code cannot be remembered. Allow cookies for this "
            "site (or open the app in its own tab, not inside another page) and reload."
        )
        return
    client = _client_id(key)
    old = grants.get(key)
    closed = kinds_still_closed(access, old if isinstance(old, CodeGrant) else None)
    wait = THROTTLE.wait_left(client, closed)
    if wait > 0:
        st.error(f"Too many wrong codes: wait {math.ceil(wait)} s before the next try.")
        return
    grant = access.grant_for(code)
    if grant is None:
        wait = THROTTLE.failed(client, closed)
        extra = f" Wait {math.ceil(wait)} s before the next try." if wait else ""
        st.error(f"That code is not right.{extra}")
        return
    THROTTLE.succeeded(client, kinds_of(access, code))  # its own kind only: other kinds keep their counts
    merged = grant.merge(old if isinstance(old, CodeGrant) else None)
    g = guard.active()
    if g is not None and grants is g.grants:
        ui_state().renew_token = g.sign_in(key, _session_id(), merged)  # a fresh cookie at sign-in (no fixation)
    else:
        grants.put(key, merged)
    log.info("access code accepted from client %s", client)
    st.rerun()


def _code_gate(access: AccessConfig) -> tuple[str | None, CodeGrant | None]:
    """``code`` mode: the grant bound to this browser's cookie; shows the code form and stops the run without one."""
    if access.refusal:
        log.error("AffectLab refuses to serve: %s", access.refusal)
        st.title("AffectLab")
        st.error(f"This deployment is misconfigured, so nothing is shown: {access.refusal}.")
        st.stop()
    key, grants = _browser()
    if grants is None:
        st.title("AffectLab")
        reason = (
            "Access codes need the sign-in guard in front of the app: start it with `streamlit run "
            "webapp/serve.py` (make run and the Docker image do), not webapp/app.py."
        )
        log.error("AffectLab refuses to serve access codes without the guard (webapp/serve.py)")
        st.error(reason)
        st.stop()
    grant = grants.get(key)
    if isinstance(grant, CodeGrant):
        return key, grant
    st.title("AffectLab")
    _code_form(
        access,
        key,
        grants,
        label="Study access code",
        form_key="access",
        widget_key=Keys.ACCESS_CODE,
        enter_key=Keys.ACCESS_ENTER,
    )
    _end_session()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _visible(access: AccessConfig, who: str | None, grant: CodeGrant | None) -> Callable[[str], bool]:
    """Whether this browser may see a study (listed, opened, its media and names): the one rule of every page."""
    if access.mode == "local":
        return lambda _study: True
    if access.mode == "code":
        return lambda study: access.may_see(grant, study)
    return lambda study: access.may_annotate(who, study)


def _sidebar_study(access: AccessConfig, state: UIState, store: LabelStore, visible: Callable[[str], bool]) -> str:
    names = [s.name for s in studies.list_studies(store)]
    if access.default_study not in names:
        names.insert(0, access.default_study)
    if state.study and state.study not in names:
        names.append(state.study)
    names = [n for n in names if visible(n)]
    if not names:
        st.title("AffectLab")
        st.error("Your sign-in opens no study here; ask a study owner for the study's code.")
        st.stop()
    if state.switch_study is not None:  # set before the widget exists, so that the widget shows it
        if state.switch_study in names:
            set_widget_value(Keys.STUDY, state.switch_study)
            state.study = state.switch_study
        state.switch_study = None
    current = state.study if state.study in names else names[0]
    choice = st.sidebar.selectbox(
        "Study",
        [*names, NEW_STUDY],
        index=[*names, NEW_STUDY].index(current),
        key=Keys.STUDY,
        help="Results and labels are stored per study.",
    )
    if choice == NEW_STUDY:
        new = st.sidebar.text_input("New study name", key=Keys.NEW_STUDY, max_chars=200).strip()
        if new and not visible(new):
            st.sidebar.error("That name is taken by a study you have no access to; choose another.")
            return current
        if new:
            state.study = new
            return new
        return current
    state.study = choice
    return choice


def _sidebar_annotator(
    access: AccessConfig, state: UIState, who: str | None, study: str, store: LabelStore
) -> str | None:
    """The annotator of this run: the login with sign-in, else the typed name; as the store knows the person.

    Names are one identity whatever their case and spaces (``db.repo.annotator_key``): what a person types is
    resolved to the name their votes are stored under, so that their own labels, skips and undo are found.
    """
    if access.mode == "oidc":
        st.sidebar.markdown(f"Signed in as {code_span(who or '')}")
        st.sidebar.button("Sign out", on_click=st.logout, icon=":material/logout:")
        return store.review.annotator_name(who) if who and access.may_annotate(who, study) else None
    name = st.sidebar.text_input(
        "Your name (annotator)",
        value=state.annotator,
        key=Keys.ANNOTATOR,
        placeholder="needed before your first correction",
        max_chars=200,
    )
    state.annotator = name.strip()
    if not state.annotator:
        return None
    if not access.may_annotate(state.annotator, study):
        st.sidebar.error(f"{code_span(state.annotator)} is not on the annotator list of this study.")
        return None
    known = store.review.annotator_name(state.annotator)
    if known != state.annotator:
        st.sidebar.caption(f"Labelling as {code_span(known)} (the same person: capitals and spaces do not count).")
    return known


def _forget_browser() -> None:
    """Tells the guard that this browser is signed out."""
    g = guard.active()
    if g is not None:
        g.grants.revoke(_guard_bid(g))


def _mark_signed_in(access: AccessConfig, who: str | None) -> None:
    """Tells the guard that this browser is signed in (login or local use), so that its uploads go through.

    At a login (the first run that finds one) the browser's ``affectlab_session`` cookie is renewed as at a code
    sign-in (:meth:`webapp.guard.GuardState.sign_in`): a cookie planted before the login gets nothing. Streamlit's
    own login cookie (``_streamlit_user``) needs no renewal: its ``/oauth2callback`` issues a new one at every login,
    and it holds the signed identity itself (no server state it refers to), so no value known before can become
    signed in.
    """
    g = guard.active()
    if g is None or access.mode == "closed" or (access.mode == "oidc" and who is None):
        return
    bid = _guard_bid(g)
    if bid is not None and g.grants.get(bid) is None:
        if access.mode == "oidc":
            ui_state().renew_token = g.sign_in(bid, _session_id(), who)
        else:  # local use: no sign-in, no credential a planted cookie could take over
            g.grants.put(bid, "local")


def main() -> None:
    """Runs one script run of the app."""
    st.set_page_config(page_title="AffectLab", page_icon=":material/sentiment_satisfied:", layout="wide")
    st.html(LAYOUT_CSS)
    s = resources.settings()
    state = ui_state()
    access = load_access_config(s, _secrets(), st.get_option("server.address"))
    if not state.url_loaded:  # a reload or a bookmark: bring back the study, name, queue, open item and page
        from_url(state, st.query_params, annotator_from_url=access.mode != "oidc")
        state.page_wanted = _page_from_address(state)  # kept through a sign-in step, which loses the address's path
    # the demo study's old media go on the server's first script run, then at most hourly, whoever visits
    demo.clear_demo_if_due(resources.label_store(s), resources.media_dir(s), s.demo_ttl_hours)
    who = _gate(access, state)
    key, grant = _code_gate(access) if access.mode == "code" else (None, None)
    if access.mode != "code":
        _mark_signed_in(access, who)
    _renew_cookie()
    visible = _visible(access, who, grant)
    store = resources.label_store(s)
    study = _sidebar_study(access, state, store, visible)
    if not visible(study):  # never reached through the sidebar; a guard for every other way in
        st.error(f"You have no access to study {code_span(study)}; choose another study.")
        st.stop()
    annotator = _sidebar_annotator(access, state, who, study, store)
    if access.mode == "code":
        _, grants = _browser()
        with st.sidebar.expander("Another code (a study's code, owners' code)"):
            _code_form(
                access,
                key,
                grants,
                label="Code",
                form_key="more_codes",
                widget_key=Keys.OWNER_CODE,
                enter_key=Keys.OWNER_CODE_ENTER,
            )
        if st.sidebar.button("Sign out", icon=":material/logout:", key=Keys.CODE_SIGN_OUT) and grants is not None:
            grants.revoke(key)
            _end_session()
            st.rerun()
    owner = access.is_owner(who or annotator, study, owner_code_ok=access.owns(grant, study))
    set_context(
        Context(
            settings=s,
            access=access,
            store=store,
            study=study,
            who=who,
            annotator=annotator,
            owner=owner,
            media_dir=resources.media_dir(s),
            global_owner=access.is_global_owner(who, grant),
        )
    )
    views = Path(__file__).parent / "views"
    pages = {
        path: st.Page(
            views / f"{'model_weights' if path == 'models' else path}.py",
            title=title,
            icon=icon,
            url_path=path,
            default=path == "analyze",
        )
        for path, (title, icon) in PAGES.items()
    }
    current = st.navigation(list(pages.values()))
    wanted, state.page_wanted = state.page_wanted, ""
    if wanted in pages and current.url_path != wanted:  # the bookmark's page, after a sign-in step or a restart
        st.switch_page(pages[wanted])
    current.run()
    remember_in_url()
    resources.settle_heap()


main()
