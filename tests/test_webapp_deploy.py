"""Deployment files and the pure helpers of the web app: config, Dockerfile, secrets bridge, figures, safe text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

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
    env = {"OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": "sec", "OPENID_PROVIDER_URL": "https://huggingface.co",
           "SPACE_HOST": "me-affectlab.hf.space", "AFFECTLAB_COOKIE_SECRET": "c"}
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
        figures.class_counts(["Anger", "Happiness"], {"model": {"Anger": 1}}, "t"),
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
