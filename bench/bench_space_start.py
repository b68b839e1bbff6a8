"""Seconds from the Space's start to its first page, measured the way tests/test_space_start.py starts it.

Runs the Dockerfile's weights and samples steps and ``webapp/docker_start.sh`` as an unprivileged user with a fresh
home (weights: random ones in the published formats, served by a local HTTP mirror), then drives Chromium: first
page (the access-code form), the Analyze page after the code, and "Try a sample" until the sample video's engagement
score shows. Prints each timing per run and the medians. Needs root (useradd, runuser) and /usr/bin/chromium.

Usage: python bench/bench_space_start.py [--runs 3] [--no-sample]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.download import git_blob_sha1  # noqa: E402
from models.registry import DEFAULT_APP_MODELS  # noqa: E402
from tests import spacestart  # noqa: E402
from tests.testdata import pyfeat_wheel  # noqa: E402

KEYS = ("fetch", "samples", "health", "first_page", "analyze_page", "sample")


def one_run(published: dict[str, Path], pins: dict[str, str], sample: bool) -> dict[str, float]:
    """One fresh start (new home, new data, weights fetched again); returns its timings in seconds."""
    work = Path(tempfile.mkdtemp(prefix="affectlab-space-work-"))
    try:
        with (
            spacestart.weights_mirror(published) as mirror,
            spacestart.prepared_space(work, mirror, pins, pyfeat_wheel()) as space,
        ):
            spacestart.run_setup(space)
            with spacestart.started(space) as (url, t0):
                spacestart.visit(url, t0, space, sample=sample)
            return dict(space.timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Runs the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-sample", action="store_true", help="stop at the Analyze page")
    args = parser.parse_args(argv)
    why = spacestart.unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="affectlab-space-published-") as tmp:
        published = spacestart.random_published(DEFAULT_APP_MODELS, Path(tmp))
        pins = {name: git_blob_sha1(path) for name, path in published.items()}
        runs = []
        for i in range(args.runs):
            t = one_run(published, pins, not args.no_sample)
            runs.append(t)
            print(f"run {i + 1}: " + ", ".join(f"{k} {t[k]:.1f} s" for k in KEYS if k in t), flush=True)
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s" for k in KEYS if k in runs[0]))
    print(
        "(fetch and samples: the image's build steps; health, first_page, analyze_page: seconds from the start "
        "script's launch; sample: Try a sample click to the engagement score)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
