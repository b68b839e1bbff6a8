"""Review speed as an annotator feels it: key press to the next face shown, in Chromium, side by side in one run.

Two servers of the app run on copies of one study (60 synthetic faces with predictions). By default: this tree's
app, where a key press in Review reruns only the review panel (a Streamlit fragment), and the same with
``AFFECTLAB_REVIEW_FRAGMENT=0``, where it reruns the whole page. With ``--baseline REV`` the second server is the app
of commit ``REV`` instead (its tree exported with ``git archive`` to a temporary folder, its study seeded by its own
code), to compare a change with the app before it. Playwright drives Debian's Chromium through ``--faces`` faces by
keyboard on each, in alternating blocks of 5 so that load on the machine hits both alike, and prints the median and
90th percentile key-to-next-face latency, faces per minute, the ratio, and the machine's load (1-minute load average
before and after, and the number of cores): on a shared machine the numbers are only comparable side by side.

Usage: python bench/bench_review.py [--faces 50] [--block 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
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
    from core.settings import Settings
    from db.services import LabelStore

    store = LabelStore(Settings(data_dir=data).database_url, data_dir=data)
    store.upgrade()
    boxes = [(10.0, 10.0, 60.0, 70.0), (70.0, 10.0, 120.0, 70.0), (130.0, 10.0, 180.0, 70.0)]
    classes = ["Anger", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
    for i in range(n_faces // 3):
        name = f"img{i:03d}.png"
        labels = [classes[(i + k) % len(classes)] for k in range(3)]
        conf = [0.2 + 0.6 * ((i * 3 + k) % 17) / 17 for k in range(3)]
        store.ingest.ingest_results(
            "default", png_bytes(i, (200, 90)), name, fake_results(name, boxes, labels, seed=i, confidence=conf)
        )
    store.close()


@contextlib.contextmanager
def _server(data: Path, fragment: bool, root: Path = ROOT) -> Iterator[str]:
    env = {"AFFECTLAB_REVIEW_FRAGMENT": "1" if fragment else "0"}
    with serve_app(data, data / "no-weights", data / "server.log", env=env, root=root) as (url, _proc):
        yield url


def _export(rev: str, into: Path) -> Path:
    """Commit ``rev``'s tree in ``into`` (``git archive``), to serve the app as it was."""
    blob = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def _seed_with(root: Path, data: Path, n_faces: int) -> None:
    """Seeds ``data`` with the tree ``root``'s own code (its schema and migrations)."""
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from bench.bench_review import _seed; "
    code += f"_seed(__import__('pathlib').Path({str(data)!r}), {n_faces})"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFFECTLAB_", "DATABASE_URL"))}
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, env=env)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


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
    ap.add_argument("--baseline", help="a commit to compare with (its app as the second server)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="affectlab-bench-review-") as tmp:
        dirs = {True: Path(tmp) / "fragment", False: Path(tmp) / "full"}
        other_root = _export(args.baseline, Path(tmp) / "baseline") if args.baseline else ROOT
        _seed(dirs[True], args.faces + 10)
        _seed_with(other_root, dirs[False], args.faces + 10)
        second_fragment = bool(args.baseline)
        with (
            _server(dirs[True], True) as url_f,
            _server(dirs[False], second_fragment, other_root) as url_p,
            sync_playwright() as p,
        ):
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

    names = {True: "this tree (panel rerun)", False: f"baseline {args.baseline}" if args.baseline else "whole page"}
    print(f"review by keyboard, {args.faces} faces each, alternating blocks of {args.block} (Chromium, 2 servers)")
    print(f"machine before: {load_before}; after: {_load()}")
    print(f"{'':30}{'median ms':>10}{'p90 ms':>9}{'faces/min':>11}")
    for frag in (True, False):
        med = statistics.median(lat[frag]) * 1000
        print(f"{names[frag]:30}{med:10.0f}{q90(lat[frag]) * 1000:9.0f}{60 * len(lat[frag]) / wall[frag]:11.1f}")
    ratio = statistics.median(lat[False]) / statistics.median(lat[True])
    print(f"median latency ratio ({names[False]} / this tree): {ratio:.2f}x; goal: p90 <= 250 ms on an idle machine")


if __name__ == "__main__":
    main()
