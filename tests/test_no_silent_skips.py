"""A skip fails `make test` unless AFFECTLAB_ALLOW_SKIPS=1 (the hook in tests/conftest.py), tried in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = """
import pytest

def test_skip_call():
    pytest.skip("no PostgreSQL here")

@pytest.mark.skipif(True, reason="no Chromium here")
def test_skip_marker():
    pass

def test_passes():
    pass
"""


def _run(tmp_path: Path, allow: str | None) -> subprocess.CompletedProcess[str]:
    case = tmp_path / "test_cases.py"
    case.write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k != "AFFECTLAB_ALLOW_SKIPS"}
    if allow is not None:
        env["AFFECTLAB_ALLOW_SKIPS"] = allow
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(case), "-p", "tests.conftest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_a_skip_fails_the_run_and_says_how_to_fix_it(tmp_path: Path) -> None:
    r = _run(tmp_path, None)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in r.stdout and "1 error" in r.stdout and "1 passed" in r.stdout, (
        r.stdout
    )  # a marker skips in setup
    assert "no PostgreSQL here" in r.stdout and "make system-deps" in r.stdout


def test_skips_allowed_only_with_the_variable_set_to_one(tmp_path: Path) -> None:
    allowed = _run(tmp_path, "1")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "2 skipped" in allowed.stdout
    assert _run(tmp_path, "yes").returncode == 1
