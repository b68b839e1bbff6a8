"""The real pages in Chromium, two source trees side by side on copies of one kept study (issue 19's page targets).

What ``bench_scale.py --chromium`` times (Review opened, a key press to the next face shown, Library, Classroom,
Dataset; the same "page is complete" conditions), for a baseline tree and this one at once: each tree is served by its
own ``streamlit run`` on its own copy of the SQLite study (key presses write votes), and every action alternates
between them (old first on even rounds, new first on odd ones), with a pause after each so that one server's work
after a run does not land on the other's timing. Per page load it also prints the browser's side: when the script
started and finished running (the page's ``data-test-script-state``) and the main thread's long tasks.

Usage::

    git archive main | tar -x -C /tmp/old && ln -s "$PWD/.venv" /tmp/old/.venv
    python bench/bench_pages.py --old /tmp/old --db /tmp/s6/scale-1000000.sqlite3 --out /tmp/pages [--repeat 3]
        [--pages review_open,key_press,library,classroom,dataset] [--pause 1.5] [--media DATA/media]

Screenshots of each page (and, scrolled, the lower half of Classroom and Dataset) go to ``OUT/old`` and ``OUT/new``.
Prints the median per page and tree, with every run and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import scale_fill  # noqa: E402

PAGES = ("review_open", "key_press", "library", "classroom", "dataset")
FACE = r"Face (\d+), file"
IDLE = (
    "() => { const e = document.querySelector('[data-test-script-state]');"
    " return e && e.getAttribute('data-test-script-state') === 'notRunning'; }"
)
TIMELINE = """
window.__t = {longtask: 0, n: 0};
try { new PerformanceObserver(l => {
    for (const e of l.getEntries()) { window.__t.longtask += e.duration; window.__t.n++; } })
  .observe({entryTypes: ['longtask']}); } catch (e) {}
const seen = () => { const e = document.querySelector('[data-test-script-state]');
  if (e) { const s = e.getAttribute('data-test-script-state');
    if (s !== window.__t.last) { window.__t.last = s; window.__t[s] = performance.now(); } } };
new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true,
  attributeFilter: ['data-test-script-state']});
"""
"""Injected into every page: the main thread's long tasks and when the script state last changed."""
DONE: dict[str, Callable[[Any], None]] = {
    "library": lambda p: p.get_by_text("open one to see its stored results").wait_for(),
    "classroom": lambda p: p.get_by_role("heading", name="Class over time").wait_for(),
    "dataset": lambda p: p.get_by_role("heading", name=re.compile(r"^Media \(")).wait_for(),
}
LOWER = {"classroom": "Class over time", "dataset": re.compile(r"^Media \(")}
"""The heading each page is scrolled to for its second screenshot."""


def _review_open(page: Any, url: str, query: str) -> float:
    t0 = time.perf_counter()
    page.goto(f"{url}/review?{query}")
    page.get_by_text("in the study for you").wait_for()
    page.wait_for_selector('button:has-text("Undo")')
    page.wait_for_function(IDLE)
    return time.perf_counter() - t0


def _key_press(page: Any) -> float:
    before = page.evaluate(f"() => (document.body.innerText.match(/{FACE}/) || [])[1] || ''")
    t0 = time.perf_counter()
    page.keyboard.press("1")
    page.wait_for_function(
        f"(old) => {{ const m = document.body.innerText.match(/{FACE}/); return m && m[1] !== old; }}",
        arg=before,
        polling="raf",
    )
    t = time.perf_counter() - t0
    with contextlib.suppress(Exception):
        page.wait_for_selector('button:has-text("Undo")')
        page.wait_for_function(IDLE)
    print(f"  key press: the whole panel (strip, history) done in {(time.perf_counter() - t0) * 1000:.0f} ms")
    return t


def _open(page: Any, url: str, name: str, query: str) -> tuple[float, str]:
    """Opens a page until complete; the time and the browser's side of it."""
    t0 = time.perf_counter()
    if name == "review_open":
        t = _review_open(page, url, query)
    else:
        page.goto(f"{url}/{name}?{query}")
        DONE[name](page)
        page.wait_for_function(IDLE)
        t = time.perf_counter() - t0
    tm = page.evaluate("() => window.__t")
    side = (
        f"script ran {tm.get('running', 0):.0f}-{tm.get('notRunning', 0):.0f} ms, "
        f"long tasks {tm['longtask']:.0f} ms ({tm['n']})"
    )
    return t, side


def _screens(page: Any, folder: Path, name: str) -> None:
    with contextlib.suppress(Exception):
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        if name in LOWER:
            page.get_by_role("heading", name=LOWER[name]).scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(folder / f"{name}-lower.png"))


def run(
    old: Path, db: Path, out: Path, repeat: int, pages: list[str], pause: float, media: Path | None = None
) -> dict[tuple[str, str], list]:
    """Both trees served and timed, alternating; returns ``(page, tree) -> seconds of each run``."""
    from playwright.sync_api import sync_playwright

    from tests.server import CHROMIUM, CHROMIUM_ARGS, serve_app

    query = f"study={scale_fill.STUDY}&annotator={scale_fill.ANNOTATORS[0]}"
    times: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        urls = {}
        for tag, root in (("old", old), ("new", ROOT)):
            served = out / tag / "served"
            served.mkdir(parents=True, exist_ok=True)
            if not (served / "affectlab.sqlite3").exists():
                shutil.copy2(db, served / "affectlab.sqlite3")
            if media is not None and not (served / "media").exists():  # the kept recordings: crops re-cut from them
                (served / "media").symlink_to(media.resolve())
            log = out / tag / "server.log"
            urls[tag], _ = stack.enter_context(serve_app(served, served / "no-weights", log, root=root))
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tabs = {}
        for tag in urls:
            tabs[tag] = browser.new_page(viewport={"width": 1400, "height": 1600})
            tabs[tag].set_default_timeout(120_000)
            tabs[tag].add_init_script(TIMELINE)
        for i in range(repeat):
            for name in pages:
                for tag in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    tab, side = tabs[tag], ""
                    tab.bring_to_front()  # one tab per tree: the one acting is the browser's foreground tab
                    if name == "key_press":
                        if not times.get((name, tag)):
                            _review_open(tab, urls[tag], query)
                            tab.get_by_role("heading", name="Review").click()
                        t = _key_press(tab)
                    else:
                        t, side = _open(tab, urls[tag], name, query)
                    times.setdefault((name, tag), []).append(t)
                    print(f"{name:12s} {tag}: {t * 1000:6.0f} ms  {side}  load {os.getloadavg()[0]:.1f}", flush=True)
                    if i == repeat - 1:
                        _screens(tab, out / tag, name)
                    time.sleep(pause)  # the server's work after the run ends before the other tree's turn
        browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the baseline source tree (its .venv may be a link)")
    ap.add_argument("--db", type=Path, required=True, help="a kept SQLite study (bench_scale.py / scale_fill.py)")
    ap.add_argument("--out", type=Path, required=True, help="copies of the study, server logs, screenshots")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pages", default=",".join(PAGES))
    ap.add_argument("--pause", type=float, default=1.5, help="seconds after each timing")
    ap.add_argument("--media", type=Path, help="the study's media folder (kept recordings: Review re-cuts crops)")
    args = ap.parse_args(argv)
    pages = [p for p in args.pages.split(",") if p]
    unknown = sorted(set(pages) - set(PAGES))
    if unknown or not args.db.is_file() or not (args.old / "webapp" / "app.py").is_file():
        print(f"unknown pages {unknown}, or no study at {args.db}, or no app under {args.old}", file=sys.stderr)
        return 2
    print(f"load before: {os.getloadavg()[0]:.1f}", flush=True)
    times = run(args.old.resolve(), args.db, args.out, args.repeat, pages, args.pause, args.media)
    print(f"median of {args.repeat}, load after {os.getloadavg()[0]:.1f}")
    for name in pages:
        o, n = times.get((name, "old"), []), times.get((name, "new"), [])
        if o and n:
            mo, mn = statistics.median(o), statistics.median(n)
            runs = f"old {', '.join(f'{x:.2f}' for x in o)}; new {', '.join(f'{x:.2f}' for x in n)}"
            print(f"{name:12s} old {mo:6.2f} s  new {mn:6.2f} s  new/old {mn / mo:.2f}  ({runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
