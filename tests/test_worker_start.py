"""Workers spawned from a Streamlit server do not run its page script again (the app started a page in each worker)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _driver(tmp_path: Path, apart: bool) -> tuple[str, str]:
    """Runs a script as ``__main__`` (as Streamlit runs a page) that spawns one worker; returns the marks written."""
    marks = tmp_path / ("apart" if apart else "plain")
    marks.mkdir()
    page = tmp_path / f"page_{marks.name}.py"
    page.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing, pathlib, sys
            from affectlab.orphans import start_apart
            from tests.test_worker_start import work

            pathlib.Path({str(marks)!r}, f"page-{{multiprocessing.current_process().name}}").touch()
            if multiprocessing.current_process().name == "MainProcess":
                proc = multiprocessing.get_context("spawn").Process(target=work, args=({str(marks)!r},), name="w")
                start_apart(proc) if {apart} else proc.start()
                proc.join(120)
            """
        )
    )
    code = f"import runpy; runpy.run_path({str(page)!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return " ".join(sorted(p.name for p in marks.iterdir())), proc.stderr


def work(folder: str) -> None:
    """The worker's job: one mark."""
    Path(folder, "work").touch()


def test_a_spawned_worker_runs_its_job_and_not_the_drivers_page(tmp_path: Path) -> None:
    plain, _ = _driver(tmp_path, apart=False)
    apart, _ = _driver(tmp_path, apart=True)
    assert plain == "page-MainProcess page-w work", "without it the page runs again in the worker (the test's premise)"
    assert apart == "page-MainProcess work"
