"""Access: signed-out sessions see no media, face or label; login identity; allowlists; owners; access code."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectlab.settings import Settings
from tests.apphelpers import new_app, no_exception, page, store_for
from webapp.access import AccessConfig, is_loopback, load_access_config, parse_people

AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "not-a-secret",
                 "client_id": "affectlab", "client_secret": "s",
                 "server_metadata_url": "https://example.org/.well-known/openid-configuration"}}  # fmt: skip


# ------------------------------------------------------------------------------------------------- rules


def test_parse_people() -> None:
    assert parse_people("Alice@x.org, bob") == {"*": frozenset({"alice@x.org", "bob"})}
    assert parse_people("pilot=a,b;main=c;*=d") == {"pilot": frozenset({"a", "b"}), "main": frozenset({"c"}),
                                                    "*": frozenset({"d"})}  # fmt: skip
    assert parse_people({"pilot": ["a", "B"]}) == {"pilot": frozenset({"a", "b"})}
    assert parse_people("") == {} and parse_people(None) == {}


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback(None)


def test_modes_and_rules() -> None:
    local = load_access_config(Settings.from_env({}), {}, "127.0.0.1")
    assert local.mode == "local" and local.is_owner(None, "x") and local.may_annotate("anyone", "x")
    assert load_access_config(Settings.from_env({}), {}, "0.0.0.0").mode == "closed"
    assert load_access_config(Settings.from_env({"SPACE_ID": "u/s"}), {}, "127.0.0.1").mode == "closed"
    trusted = Settings.from_env({"SPACE_ID": "u/s", "AFFECTLAB_ALLOW_OPEN": "1"})
    assert load_access_config(trusted, {}, "0.0.0.0").mode == "local"
    with_code = Settings.from_env({"AFFECTLAB_ACCESS_CODE": "k", "AFFECTLAB_ANNOTATORS": "pilot=ann"})
    code = load_access_config(with_code, {}, "0.0.0.0")
    assert code.mode == "code" and code.check_code("k") and not code.check_code("K") and not code.check_code("")
    assert code.may_annotate("Ann", "pilot") and not code.may_annotate("ann", "other")
    assert not code.is_owner("ann", "pilot"), "a typed name never makes an owner"
    oidc = load_access_config(Settings.from_env({"AFFECTLAB_OWNERS": "pilot=boss@x.org"}), AUTH, "0.0.0.0")
    assert oidc.mode == "oidc" and oidc.is_owner("Boss@x.org", "pilot") and not oidc.is_owner("boss@x.org", "main")
    assert AccessConfig(mode="closed").may_annotate("x", "y") is False


# ------------------------------------------------------------------------------------------------- the app


def _shows_nothing_private(at) -> None:
    """No media, face or label: no image, chart, table, video, correction control, file name or class name."""
    no_exception(at)
    for kind in ("image", "plotly_chart", "dataframe", "video", "file_uploader", "camera_input", "download_button",
                 "metric"):  # fmt: skip
        assert not at.get(kind), kind
    assert not at.pills and not at.subheader and not at.sidebar.selectbox
    text = " ".join(str(getattr(e, "value", "")) for e in (*at.markdown, *at.caption, *at.info, *at.error, *at.title))
    for private in ("multi_face", "Happiness", "Neutral", "Sadness", "face 1"):
        assert private not in text, private


def test_signed_out_session_sees_no_media_face_or_label(multi_face_app_dir: Path) -> None:
    at = new_app(**AUTH)
    at.user = {"is_logged_in": False}
    at.run()
    _shows_nothing_private(at)
    assert [b.label for b in at.button] == ["Sign in"]
    for name in ("review", "dataset", "model_weights"):
        at.switch_page(f"views/{name}.py")
        at.run()
        _shows_nothing_private(at)


def test_signed_in_identity_comes_from_the_login(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLAB_ANNOTATORS", "ann@x.org")
    at = new_app(**AUTH)
    at.user = {"is_logged_in": True, "email": "ann@x.org", "name": "Ann"}
    page(at, "review")
    no_exception(at)
    assert not at.sidebar.text_input, "no name field when signed in"
    assert any("ann@x.org" in m.value for m in at.sidebar.markdown)
    at.button(key="cls_Anger").click().run()
    no_exception(at)
    (face,) = [f for f in store_for(multi_face_app_dir).faces("default") if f.label_source == "human"]
    assert face.judgements[0].annotator == "ann@x.org"
    page(at, "dataset")
    assert not at.get("download_button") and any("owners" in i.value for i in at.info)


def test_signed_in_but_not_on_the_list(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLAB_ANNOTATORS", "ann@x.org")
    at = new_app(**AUTH)
    at.user = {"is_logged_in": True, "email": "mallory@x.org"}
    at.run()
    _shows_nothing_private(at)
    assert "not on this deployment's list" in at.error[0].value


def test_owner_gets_exports(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLAB_OWNERS", "boss@x.org")
    at = new_app(**AUTH)
    at.user = {"is_logged_in": True, "email": "boss@x.org"}
    page(at, "dataset")
    no_exception(at)
    assert len(at.get("download_button")) == 6


def test_access_code(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "open sesame")
    at = new_app()
    at.run()
    _shows_nothing_private(at)
    at.text_input(key="w_access_code").input("wrong")
    at.button[0].click().run()
    _shows_nothing_private(at)
    assert at.error[0].value == "That code is not right."
    at.text_input(key="w_access_code").input("open sesame")
    at.button[0].click().run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Analyze"]
    page(at, "dataset")
    assert not at.get("download_button"), "the study code alone does not make an owner"


def test_hosted_without_sign_in_shows_nothing(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/affectlab")
    at = new_app()
    at.run()
    _shows_nothing_private(at)
    assert "Sign-in is not configured" in at.error[0].value
