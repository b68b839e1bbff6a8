"""Access: signed-out sessions see no media, face or label; login identity; allowlists; owners; access code."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from core.settings import Settings
from tests.apphelpers import new_app, no_exception, page, store_for
from webapp.access import AccessConfig, is_loopback, load_access_config, parse_people

AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "not-a-secret",
        "client_id": "affectlab",
        "client_secret": "s",
        "server_metadata_url": "https://example.org/.well-known/openid-configuration",
    }
}


# ------------------------------------------------------------------------------------------------- rules


def test_parse_people() -> None:
    assert parse_people("Alice@x.org, bob") == {"*": frozenset({"alice@x.org", "bob"})}
    assert parse_people("pilot=a,b;main=c;*=d") == {
        "pilot": frozenset({"a", "b"}),
        "main": frozenset({"c"}),
        "*": frozenset({"d"}),
    }
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
    for kind in (
        "image",
        "plotly_chart",
        "dataframe",
        "video",
        "file_uploader",
        "camera_input",
        "download_button",
        "metric",
    ):
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
    next(b for b in at.button if b.key and b.key.startswith("cls_Anger_")).click().run()
    no_exception(at)
    (face,) = [f for f in store_for(multi_face_app_dir).recordings.faces("default") if f.label_source == "human"]
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


# ------------------------------------------------------------------------------------------------- codes per study


def test_per_study_codes_and_owner_codes() -> None:
    env = {
        "AFFECTLAB_ACCESS_CODE": "all",
        "AFFECTLAB_OWNER_CODE": "boss",
        "AFFECTLAB_STUDY_CODES": "pilot=p1;main=m1",
        "AFFECTLAB_STUDY_OWNER_CODES": "pilot=p-own",
    }
    access = load_access_config(Settings.from_env(env), {}, "0.0.0.0")
    assert access.mode == "code" and not access.refusal
    every = access.grant_for("all")
    assert access.may_see(every, "default") and not access.may_see(every, "pilot"), "a coded study needs its code"
    pilot = access.grant_for("p1")
    assert access.may_see(pilot, "pilot") and not access.may_see(pilot, "main") and not access.may_see(pilot, "x")
    assert not access.owns(pilot, "pilot")
    pilot_owner = access.grant_for("p-own")
    assert access.may_see(pilot_owner, "pilot") and access.owns(pilot_owner, "pilot")
    assert not access.owns(pilot_owner, "main")
    boss = access.grant_for("boss")
    assert access.may_see(boss, "main") and access.owns(boss, "anything")
    both = every.merge(pilot)
    assert access.may_see(both, "pilot") and access.may_see(both, "default") and not access.may_see(both, "main")
    assert access.grant_for("P1") is None and access.grant_for("") is None and access.grant_for(None) is None
    only_study = load_access_config(Settings.from_env({"AFFECTLAB_STUDY_CODES": "pilot=p1"}), {}, "0.0.0.0")
    assert only_study.mode == "code" and only_study.grant_for("p1") is not None


def test_per_study_allowlist_without_a_study_code_is_refused() -> None:
    env = {"AFFECTLAB_ACCESS_CODE": "k", "AFFECTLAB_ANNOTATORS": "pilot=alice"}
    access = load_access_config(Settings.from_env(env), {}, "0.0.0.0")
    assert "pilot" in access.refusal and "AFFECTLAB_STUDY_CODES" in access.refusal
    coded = load_access_config(Settings.from_env({**env, "AFFECTLAB_STUDY_CODES": "pilot=p1"}), {}, "0.0.0.0")
    assert not coded.refusal
    assert not load_access_config(Settings.from_env({**env, "AFFECTLAB_ANNOTATORS": "alice"}), {}, "0.0.0.0").refusal


def test_refused_configuration_shows_nothing(
    multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "k")
    monkeypatch.setenv("AFFECTLAB_ANNOTATORS", "pilot=alice")
    at = new_app()
    at.run()
    _shows_nothing_private(at)
    assert "misconfigured" in at.error[0].value and "pilot" in at.error[0].value
    assert not at.text_input, "no code is even asked for"
    assert any("refuses to serve" in r.getMessage() for r in caplog.records)


def test_a_study_code_opens_only_its_study(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "everyone")
    monkeypatch.setenv("AFFECTLAB_STUDY_CODES", "default=only-default")
    at = new_app()
    at.run()
    at.text_input(key="w_access_code").input("everyone")
    at.button[0].click().run()
    _shows_nothing_private(at)  # the study holding the faces has its own code: the global one does not open it
    assert "opens no study" in at.error[0].value
    at = new_app()
    at.query_params["study"] = "default"
    at.run()
    at.text_input(key="w_access_code").input("only-default")
    at.button[0].click().run()
    no_exception(at)
    assert at.sidebar.selectbox(key="w_study").options == ["default", "+ New study..."]
    page(at, "library")
    assert any("multi_face" in m.value for m in at.markdown)
    page(at, "dataset")
    assert not at.get("download_button"), "a study code is not the owners' code"


def test_wrong_codes_wait_longer_and_log(caplog: pytest.LogCaptureFixture) -> None:
    from webapp.access import CodeThrottle

    now = [0.0]
    throttle = CodeThrottle(clock=lambda: now[0])
    assert [throttle.delay(n) for n in range(7)] == [0, 0, 0, 1, 2, 4, 8]
    with caplog.at_level("WARNING", logger="affectlab.access"):
        waits = [throttle.failed("10.0.0.1") for _ in range(4)]
    assert waits == [0, 0, 1, 2] and throttle.wait_left("10.0.0.1") == 2
    assert throttle.wait_left("10.0.0.2") == 0, "per client"
    now[0] = 1.5
    assert throttle.wait_left("10.0.0.1") == 0.5
    assert len(caplog.records) == 4 and "client 10.0.0.1 (failure 4 in a row" in caplog.records[-1].getMessage()
    throttle.succeeded("10.0.0.1", ("access", "owner", "study access", "study owner"))
    assert throttle.wait_left("10.0.0.1") == 0
    assert CodeThrottle().delay(100) == 300, "capped"


def test_wrong_codes_are_counted_per_address_and_kind() -> None:
    """An annotator's own code never resets its guesses at the owners' code; another address has its own count."""
    from webapp.access import CodeGrant, CodeThrottle, code_kinds, kinds_of, kinds_still_closed

    access = load_access_config(
        Settings.from_env(
            {
                "AFFECTLAB_ACCESS_CODE": "ann",
                "AFFECTLAB_OWNER_CODE": "own",
                "AFFECTLAB_STUDY_CODES": "pilot=p1",
                "AFFECTLAB_STUDY_OWNER_CODES": "pilot=p2",
            }
        ),
        {},
        "0.0.0.0",
    )
    assert code_kinds(access) == ("access", "owner", "study access", "study owner")
    assert kinds_of(access, "ann") == ("access",) and kinds_of(access, "p2") == ("study owner",)
    assert kinds_of(access, "guess") == () and kinds_of(access, "") == ()
    annotator = CodeGrant(see=frozenset({"*"}))
    assert kinds_still_closed(access, None) == code_kinds(access)
    assert kinds_still_closed(access, annotator) == ("owner", "study access", "study owner")
    assert kinds_still_closed(access, CodeGrant(see=frozenset({"*"}), own=frozenset({"*"}))) == (
        "study access",
        "study owner",
    )
    now = [0.0]
    throttle = CodeThrottle(clock=lambda: now[0])
    closed = kinds_still_closed(access, None)
    for _ in range(4):  # a stranger guesses: every kind counts
        throttle.failed("10.0.0.1", closed)
    assert all(throttle.count("10.0.0.1", k) == 4 for k in closed)
    throttle.succeeded("10.0.0.1", kinds_of(access, "ann"))  # then enters an annotator's code
    assert throttle.count("10.0.0.1", "access") == 0 and throttle.count("10.0.0.1", "owner") == 4
    held = kinds_still_closed(access, annotator)
    assert throttle.wait_left("10.0.0.1", held) == 2, "the guesses at the owners' code still count"
    now[0] = 10.0
    for _ in range(3):  # the annotator goes on guessing at the owners' code
        throttle.failed("10.0.0.1", held)
    assert throttle.count("10.0.0.1", "owner") == 7 and throttle.count("10.0.0.1", "access") == 0
    assert throttle.wait_left("10.0.0.1", held) == 16
    assert throttle.wait_left("10.0.0.2", closed) == 0, "per address"
    throttle.succeeded("10.0.0.1", kinds_of(access, "p1"))  # another right code: the owners' count stays
    assert throttle.count("10.0.0.1", "owner") == 7 and throttle.wait_left("10.0.0.1", held) == 16


def test_wrong_codes_in_the_app(
    multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "right one")
    at = new_app()
    at.run()
    errors = []
    for _ in range(4):
        at.text_input(key="w_access_code").input("secret-guess")
        at.button[0].click().run()
        errors.append(at.error[0].value)
    assert errors[:2] == ["That code is not right."] * 2
    assert errors[2] == "That code is not right. Wait 1 s before the next try."
    assert errors[3].startswith("Too many wrong codes: wait")
    assert all("secret-guess" not in r.getMessage() for r in caplog.records)
    assert sum("wrong access code" in r.getMessage() for r in caplog.records) == 3


# ------------------------------------------------------------------------------------------------- services


def test_owner_actions_are_checked_in_the_services(multi_face_app_dir: Path) -> None:
    from db.errors import NotAllowedError, NotFoundError
    from db.review import StudySettings
    from webapp.services import exports, library, studies, weights

    store = store_for(multi_face_app_dir)
    (media,) = studies.study_media(store, "default")
    for call in (
        lambda: exports.export_bytes(store, "default", "csv", owner=False),
        lambda: exports.dataset_card(store, "default", owner=False),
        lambda: library.delete_media(store, "default", media.id, None, owner=False),
        lambda: studies.set_study_settings(store, "default", StudySettings(), owner=False),
        lambda: weights.remove_version("x@1", multi_face_app_dir, owner=False),
        lambda: weights.fetch_weights("enet_b0_8_best_vgaf", multi_face_app_dir, owner=False, mirror=""),
        lambda: weights.import_weights(
            b"x", "x.pt", "enet_b0_8_best_vgaf", multi_face_app_dir, trust_unverified=True, owner=False
        ),
    ):
        with pytest.raises(NotAllowedError):
            call()
    face = studies.study_faces(store, "default")[0]
    assert studies.face_label(store, face.face_id, "default").face_id == face.face_id
    with pytest.raises(NotFoundError):  # another study's face id (from a URL) reads as no face at all
        studies.face_label(store, face.face_id, "other")
    with pytest.raises(NotFoundError):
        studies.face_crop(store, face.face_id, "other")
    assert studies.face_crops(store, [face.face_id], "other") == {}
    assert studies.media_tracks(store, media.id, "other") == []
    with pytest.raises(NotFoundError):
        library.delete_media(store, "other", media.id, None, owner=True)
    assert studies.study_media(store, "default"), "nothing was deleted"
    store.close()


# ------------------------------------------------------------------------------------------------- literal names


def test_user_made_names_are_shown_as_text(multi_face_app_dir: Path) -> None:
    evil = "[click](http://evil.example)![x](http://evil.example/i.png)<img src=x>**bold** :skull:"
    at = new_app()
    at.query_params["study"] = evil
    at.query_params["annotator"] = evil
    at.run()
    no_exception(at)
    shown = 0
    for name in ("analyze", "review", "library", "dataset", "model_weights"):
        page(at, name)
        no_exception(at)
        bodies = [
            str(e.value)
            for e in (
                *at.markdown,
                *at.caption,
                *at.info,
                *at.error,
                *at.warning,
                *at.success,
                *at.sidebar.markdown,
                *at.sidebar.error,
            )
        ]
        for body in bodies:  # only inside code spans: no link, image, HTML or emoji is made of it
            assert "evil.example" not in re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", body), body
            shown += "evil.example" in body
    assert shown >= 5, "the name was shown (as text) on every page"
    assert at.sidebar.selectbox(key="w_study").value == evil


def test_an_annotators_own_code_does_not_reset_its_guesses(
    multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "annotate-1")
    monkeypatch.setenv("AFFECTLAB_OWNER_CODE", "own-1")
    at = new_app()
    at.run()
    for _ in range(3):  # guesses at the gate: the third imposes 1 s on every kind
        at.text_input(key="w_access_code").input("owner-guess")
        at.button(key="w_access_enter").click().run()
    time.sleep(1.1)
    at.text_input(key="w_access_code").input("annotate-1")  # the annotator's own code: in
    at.button(key="w_access_enter").click().run()
    no_exception(at)
    assert not [t for t in at.text_input if t.key == "w_access_code"], "signed in"
    at.text_input(key="w_owner_code").input("owner-guess-2")  # one more guess at the owners' code
    at.button(key="w_owner_code_enter").click().run()
    assert [e.value for e in at.error] == ["That code is not right. Wait 2 s before the next try."], "not reset"
