"""Review in a real browser, as annotators type: Debian's Chromium driven by Playwright against the guarded app.

- A burst of 30 keys as fast as the browser takes them (pairs 0-50 ms apart, some the same key twice): every vote
  stored names a face that was on screen when its key went down (on SQLite and PostgreSQL).
- At 1280x720 the crop, every class button, Skip and Undo are inside the window without scrolling, labels whole.
- A bookmark of a Review item survives the access-code sign-in and a server restart.

The study is seeded with synthetic faces and predictions (no model runs). Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apphelpers import ROOT
from tests.pg import fake_results, png_bytes
from tests.server import CHROMIUM, CHROMIUM_ARGS, serve_app

SHOTS = ROOT / "test-output" / "screenshots"
FACE_LINE = r"Face (\d+), file"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install chromium"),
]

RECORD_KEYS = """() => {
    window.__keys = [];
    window.addEventListener('keydown', (e) => {
        const m = document.body.innerText.match(/FACE_LINE/);
        window.__keys.push({key: e.key, face: m ? Number(m[1]) : null, t: performance.now()});
    }, true);
}""".replace("FACE_LINE", FACE_LINE)
"""Records, for every key as it goes down (before the app sees it), the face on screen."""


def _seed(url: str, data: Path, n_images: int = 12) -> None:
    """A study ``default`` with ``3 * n_images`` faces over images of 3 faces each, with predictions."""
    from db.services import LabelStore

    store = LabelStore(url, data_dir=data)
    store.upgrade()
    boxes = [(10.0, 10.0, 60.0, 70.0), (70.0, 10.0, 120.0, 70.0), (130.0, 10.0, 180.0, 70.0)]
    classes = ["Anger", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
    for i in range(n_images):
        name = f"img{i:03d}.png"
        labels = [classes[(i + k) % len(classes)] for k in range(3)]
        conf = [0.2 + 0.6 * ((i * 3 + k) % 17) / 17 for k in range(3)]
        store.ingest.ingest_results(
            "default", png_bytes(i, (200, 90)), name, fake_results(name, boxes, labels, seed=i, confidence=conf)
        )
    store.close()


@contextlib.contextmanager
def _app(tmp_path: Path, url: str | None = None, env: dict[str, str] | None = None) -> Iterator[tuple[str, Path, str]]:
    data = tmp_path / "data"
    db_url = url or f"sqlite:///{data / 'affectlab.sqlite3'}"
    data.mkdir(exist_ok=True)
    if not (data / ".seeded").exists():
        _seed(db_url, data)
        (data / ".seeded").touch()
    extra = {"DATABASE_URL": db_url, **(env or {})}
    log = tmp_path / "streamlit-review.log"
    with serve_app(data, tmp_path / "no-weights", log, env=extra) as (app_url, _proc):
        yield app_url, data, db_url


def _idle(page) -> None:
    page.wait_for_function(
        "() => { const e = document.querySelector('[data-test-script-state]');"
        " return e && e.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=60_000,
    )


def _ready(page) -> None:
    page.get_by_text(re.compile(r"\d+ of \d+ left in")).first.wait_for()
    page.get_by_role("button", name="Undo").wait_for()
    _idle(page)


def _burst(page, seed: int) -> list[dict]:
    """Types 15 pairs of keys (0-50 ms apart, every third pair the same key twice), 0-250 ms between pairs."""
    rng = random.Random(seed)
    page.evaluate(RECORD_KEYS)
    for n in range(15):
        first = str(rng.randint(1, 8))
        second = first if n % 3 == 0 else str(rng.randint(1, 8))
        page.keyboard.press(first)
        page.wait_for_timeout(rng.randint(0, 50))
        page.keyboard.press(second)
        page.wait_for_timeout(rng.randint(0, 250))
    page.wait_for_timeout(1500)
    _idle(page)
    return list(page.evaluate("() => window.__keys"))


def _mismatches(keys: list[dict], votes: list[tuple[int, str]], classes: dict[int, list[str]]) -> list[str]:
    """Votes that no key press explains: matched in order, each to a later key whose class it is and whose face was
    on screen when that key went down (the stored votes are a subsequence of the key presses)."""
    bad, j = [], 0
    for face_id, label in votes:
        while j < len(keys) and not (keys[j]["face"] == face_id and classes[face_id][int(keys[j]["key"]) - 1] == label):
            j += 1
        if j == len(keys):
            bad.append(f"face {face_id} {label}: no key of that class was pressed while it was on screen")
            j = 0
            continue
        j += 1
    return bad


@pytest.mark.parametrize("engine_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_burst_of_keys_labels_only_faces_on_screen(tmp_path: Path, engine_kind: str, request) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from db.services import LabelStore
    from webapp.services import review

    url = None if engine_kind == "sqlite" else request.getfixturevalue("pg_server").new_database(migrated=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _app(tmp_path, url) as (app_url, data, db_url), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(120_000)
            page.goto(f"{app_url}/review?annotator=burst")
            _ready(page)
            page.get_by_role("heading", name="Review").click()
            keys = _burst(page, seed=22)
            page.screenshot(path=str(SHOTS / f"review-burst-{engine_kind}.png"))
        finally:
            browser.close()
    store = LabelStore(db_url, data_dir=data)
    try:
        rows = [r for f in store.recordings.faces("default") for r in store.recordings.history(face_id=f.face_id)]
        votes = [(r.face_id, r.label) for r in sorted(rows, key=lambda r: r.id) if r.kind == "set"]
        classes = {f: review.class_names(store.recordings.face(f)) for f, _ in votes}
    finally:
        store.close()
    assert len(keys) == 30, "every key reached the page"
    print(f"burst on {engine_kind}: 30 keys, {len(votes)} votes stored")
    assert len(votes) >= 3, f"the burst stored almost nothing ({len(votes)} votes): the test proves nothing"
    assert _mismatches(keys, votes, classes) == [], (keys, votes)
    assert len({f for f, _ in votes}) == len(votes), "no face got two votes from one burst (double presses)"


def _outside(page) -> dict[str, object]:
    """The crop, class buttons, Skip and Undo of the face on screen that are not wholly inside a 1280x720 window."""
    assert re.search(FACE_LINE, page.locator("body").inner_text()) is not None
    controls = {"crop": page.locator('[data-testid="stImage"] img').first}
    for name in ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"):
        controls[name] = page.locator(f'[class*="st-key-cls_{name}_"] button')
    controls["Skip"] = page.get_by_role("button", name="Skip")
    controls["Undo"] = page.get_by_role("button", name="Undo")
    outside = {}
    for name, loc in controls.items():
        box = loc.bounding_box()
        assert box is not None, f"{name} is not drawn"
        right, bottom = box["x"] + box["width"], box["y"] + box["height"]
        if not (box["x"] >= 0 and box["y"] >= 0 and right <= 1280 and bottom <= 720):
            outside[name] = box
    return outside


def test_labelling_controls_fit_1280x720(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _app(tmp_path) as (app_url, _data, _db), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(120_000)
            page.goto(f"{app_url}/review?annotator=fit")
            _ready(page)
            page.wait_for_timeout(500)
            page.screenshot(path=str(SHOTS / "review-1280x720.png"))
            assert _outside(page) == {}, "below the fold or cut at 1280x720"
            page.get_by_role("heading", name="Review").click()
            page.keyboard.press("2")  # a vote: its message above the panel must not push the controls down
            page.get_by_text("Stored for face").wait_for()
            _idle(page)
            page.screenshot(path=str(SHOTS / "review-1280x720-after-a-vote.png"))
            assert _outside(page) == {}, "below the fold or cut at 1280x720 after a vote"
            for name in ("Contempt", "Happiness", "Surprise"):  # whole labels: the text is not cut off
                cut = page.locator(f'[class*="st-key-cls_{name}_"] button').evaluate(
                    "b => [...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1"
                    " && getComputedStyle(e).overflow === 'hidden')"
                )
                assert not cut, f"the label {name} is cut"
            # the correction pills of a stored result show every class (they wrap, none is hidden)
            page.goto(f"{app_url}/library?annotator=fit&open=1")
            page.get_by_text("Correct face 1").wait_for()
            _idle(page)
            pills = page.locator('[data-testid="stButtonGroup"]').first.locator("button")
            assert pills.count() == 8
            for i in range(8):
                box = pills.nth(i).bounding_box()
                assert box is not None and box["x"] + box["width"] <= 1280, pills.nth(i).inner_text()
                assert pills.nth(i).evaluate(
                    "b => { const g = b.closest('[data-testid=stColumn]');"
                    " const r = g.getBoundingClientRect(), q = b.getBoundingClientRect();"
                    " return q.right <= r.right + 1 && q.left >= r.left - 1; }"
                )
        finally:
            browser.close()


def _sign_in(page, code: str) -> None:
    page.get_by_label("Study access code").fill(code)
    page.get_by_role("button", name="Enter").click()


def test_a_bookmark_survives_sign_in_and_a_server_restart(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from db.services import LabelStore

    env = {"AFFECTLAB_ACCESS_CODE": "class-of-2026"}
    for restart in range(2):  # the second server starts on the same data: no grant, no session survives
        with _app(tmp_path, env=env) as (app_url, data, db_url), playwright.sync_playwright() as p:
            store = LabelStore(db_url, data_dir=data)
            faces = [f.face_id for f in store.recordings.faces("default")]
            media = store.recordings.media("default")[1]
            store.close()
            face = faces[len(faces) // 2]
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(120_000)
                page.goto(f"{app_url}/review?study=default&annotator=zoe&face={face}")
                _sign_in(page, "class-of-2026")
                page.get_by_text(f"Face {face}, file").wait_for()  # the bookmarked face, not the queue's first
                page.wait_for_url(re.compile(rf"/review\?.*face={face}"))  # the address keeps it
                page = browser.new_page(viewport={"width": 1280, "height": 900})  # another person, a link
                page.set_default_timeout(120_000)
                page.goto(f"{app_url}/?study=default&open={media.id}")
                _sign_in(page, "class-of-2026")
                page.get_by_text("Back to the library").wait_for()
                assert "/library" in page.url
                page.get_by_text(media.filename).first.wait_for()
                page.screenshot(path=str(SHOTS / f"bookmark-after-sign-in-{restart}.png"))
            finally:
                browser.close()
