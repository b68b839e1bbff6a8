"""Review speed as an annotator feels it: key press to the next face, in Chromium, side by side in one run.

Two servers of the app run on copies of one study (60 synthetic faces with predictions): the default, where a key
press in Review reruns only the review panel (a Streamlit fragment), and ``AFFECTLAB_REVIEW_FRAGMENT=0``, where it
reruns the whole page (the app before the fragment). Playwright drives Debian's Chromium through ``--faces`` faces by
keyboard on each, in alternating blocks of 5 so that load on the machine hits both alike, and prints the median and
90th percentile key-to-next-face latency, faces per minute, and the ratio.

Usage: python bench/bench_review.py [--faces 50] [--block 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg import fake_results, png_bytes  # noqa: E402
from tests.server import CHROMIUM, CHROMIUM_ARGS, serve_app  # noqa: E402

FACE_LINE = r"Face (\d+), file"


def _seed(data: Path, n_faces: int) -> None:
    """A study ``default`` with ``n_faces`` faces over images of 3 faces each (no model needed)."""
    from affectlab.settings import Settings
    from db.services import LabelStore

    store = LabelStore(Settings(data_dir=data).database_url, data_dir=data)
    store.upgrade()
    boxes = [(10.0, 10.0, 60.0, 70.0), (70.0, 10.0, 120.0, 70.0), (130.0, 10.0, 180.0, 70.0)]
    classes = ["Anger", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
    for i in range(n_faces // 3):
        name = f"img{i:03d}.png"
        labels = [classes[(i + k) % len(classes)] for k in range(3)]
        conf = [0.2 + 0.6 * ((i * 3 + k) % 17) / 17 for k in range(3)]
        store.ingest_results(
            "default", png_bytes(i, (200, 90)), name, fake_results(name, boxes, labels, seed=i, confidence=conf)
        )
    store.close()


@contextlib.contextmanager
def _server(data: Path, fragment: bool) -> Iterator[str]:
    env = {"AFFECTLAB_REVIEW_FRAGMENT": "1" if fragment else "0"}
    with serve_app(data, data / "no-weights", data / "server.log", env=env) as (url, _proc):
        yield url


def _face(page) -> str:
    return page.evaluate(f"() => (document.body.innerText.match(/{FACE_LINE}/) || [])[1] || ''")


def _idle(page) -> None:
    """Waits until the app has finished its run (no running indicator)."""
    page.wait_for_function(
        "() => { const e = document.querySelector('[data-test-script-state]');"
        " return e && e.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=60_000,
    )


def _press(page, key: str) -> float:
    """Presses ``key`` and returns the seconds until another face is on screen."""
    before = _face(page)
    t0 = time.perf_counter()
    page.keyboard.press(key)
    try:
        page.wait_for_function(
            f"(old) => {{ const m = document.body.innerText.match(/{FACE_LINE}/); return m && m[1] !== old; }}",
            arg=before,
            timeout=60_000,
            polling="raf",
        )
    except Exception:
        shot = ROOT / "test-output" / "bench-review-failure.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        raise RuntimeError(f"face {before} did not change after pressing {key}; screenshot {shot}") from None
    dt = time.perf_counter() - t0
    page.wait_for_selector('button:has-text("Undo")')
    _idle(page)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=50)
    ap.add_argument("--block", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="affectlab-bench-review-") as tmp:
        dirs = {True: Path(tmp) / "fragment", False: Path(tmp) / "full"}
        for d in dirs.values():
            _seed(d, args.faces + 10)
        with _server(dirs[True], True) as url_f, _server(dirs[False], False) as url_p, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            pages = {}
            for frag, url in ((True, url_f), (False, url_p)):
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(f"{url}/review?annotator=bench")
                page.get_by_text("in the study for you").wait_for(timeout=120_000)
                page.wait_for_selector('button:has-text("Undo")')
                _idle(page)
                page.get_by_role("heading", name="Review").click()
                pages[frag] = page
            lat: dict[bool, list[float]] = {True: [], False: []}
            wall: dict[bool, float] = {True: 0.0, False: 0.0}
            done = 0
            while done < args.faces:
                n = min(args.block, args.faces - done)
                for frag in (True, False):
                    t0 = time.perf_counter()
                    for k in range(n):
                        lat[frag].append(_press(pages[frag], str(1 + (done + k) % 8)))
                    wall[frag] += time.perf_counter() - t0
                done += n
            browser.close()

    def q90(xs: list[float]) -> float:
        return sorted(xs)[max(0, round(0.9 * len(xs)) - 1)]

    print(f"review by keyboard, {args.faces} faces each, alternating blocks of {args.block} (Chromium, 2 servers)")
    print(f"{'':22}{'median ms':>10}{'p90 ms':>9}{'faces/min':>11}")
    for frag, name in ((True, "panel rerun (default)"), (False, "whole-page rerun")):
        med = statistics.median(lat[frag]) * 1000
        print(f"{name:22}{med:10.0f}{q90(lat[frag]) * 1000:9.0f}{60 * len(lat[frag]) / wall[frag]:11.1f}")
    ratio = statistics.median(lat[False]) / statistics.median(lat[True])
    print(f"median latency ratio (whole page / panel): {ratio:.2f}x; target: <= 300 ms and >= 4x")


if __name__ == "__main__":
    main()
