"""Hostile videos (tests/hostile.py, built from a real recording): every frame of every stream accounted for."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from models.decode import FrameReader, probe_video
from models.errors import BadInputError
from tests import hostile


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return hostile.real_frames(24)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) if a.shape == b.shape else 255.0


@pytest.mark.parametrize("abcd", hostile.DIHEDRAL)
def test_display_matrix_mirrors_and_turns_are_applied(tmp_path: Path, frames: list[np.ndarray], abcd) -> None:
    """Each of the 8 matrices (turns and mirrors) gives back the upright frames; a mirror is no 180 degree turn."""
    path = hostile.with_matrix(tmp_path / "m.mp4", frames[:4], abcd)
    info = probe_video(path)
    assert (info.width, info.height) == (320, 180)
    assert info.mirrored == (abcd[0] * abcd[3] - abcd[1] * abcd[2] < 0)
    with FrameReader(path, fps=None) as reader:
        got = [f.image for f in reader]
    assert len(got) == 4
    for want, have in zip(frames[:4], got, strict=True):
        assert _diff(want, have) < 6, abcd
        assert _diff(np.rot90(want, 2), have) > 20  # the turn it used to be read as is far off


def test_joined_ts_parts_are_all_sampled(tmp_path: Path, frames: list[np.ndarray]) -> None:
    """Joined MPEG-TS parts: timestamps go back at the join; the second part is sampled too, with a warning."""
    path = hostile.joined_ts(tmp_path / "joined.ts", frames, parts=2)
    with FrameReader(path, fps=5.0) as reader:
        got = list(reader)
    assert reader.frames_decoded == len(frames)
    assert reader.time_jumps == 1
    assert any("timestamps jump back" in w for w in reader.warnings), reader.warnings
    times = [f.time_s for f in got]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len(got) == pytest.approx(len(frames) / 10 * 5, abs=1)  # 2.4 s at 5 fps: both parts
    # The last sampled frame is the second part's, not a first-part frame.
    assert _diff(got[-1].image, frames[-1]) < _diff(got[-1].image, frames[len(frames) // 2 - 1])


def test_other_video_streams_are_named_and_can_be_chosen(tmp_path: Path, frames: list[np.ndarray]) -> None:
    path = hostile.two_streams(tmp_path / "two.mp4", frames[:6])
    with FrameReader(path, fps=None) as reader:
        first = [f.image for f in reader]
    assert any("stream 1 (h264 160x90)" in w and "--stream" in w for w in reader.warnings), reader.warnings
    assert first[0].shape == (180, 320, 3)
    with FrameReader(path, fps=None, stream=1) as reader:
        second = [f.image for f in reader]
    assert len(second) == 6 and second[0].shape == (90, 160, 3)
    assert _diff(second[0], np.ascontiguousarray(frames[0][::2, ::-2])) < 8
    assert probe_video(path, stream=1).width == 160 and probe_video(path).warnings
    with pytest.raises(BadInputError, match="choose a stream from 0 to 1"):
        FrameReader(path, stream=2)


def test_damaged_middle_names_the_seconds_skipped(tmp_path: Path, frames: list[np.ndarray]) -> None:
    path = hostile.damaged_middle(tmp_path / "damaged.ts", frames)
    with FrameReader(path, fps=None) as reader:
        got = list(reader)
    assert 0 < len(got) < len(frames)
    times = [f.time_s for f in got]
    gap = max(b - a for a, b in pairwise(times))
    assert gap > 0.3
    note = [w for w in reader.warnings if "of damaged video skipped" in w or "no frames for" in w]
    assert len(note) == 1 and f"{gap:.2f} s" in note[0], reader.warnings


def test_steady_video_has_no_gap_note(tmp_path: Path, frames: list[np.ndarray]) -> None:
    """The gap note is no false alarm: the same frames undamaged give no warning at all."""
    path = hostile.joined_ts(tmp_path / "one.ts", frames, parts=1)
    with FrameReader(path, fps=None) as reader:
        assert len(list(reader)) == len(frames)
    assert reader.warnings == []


@pytest.mark.parametrize("at", [3, 8, 10])
def test_joined_ts_resumes_like_a_straight_run(tmp_path: Path, frames: list[np.ndarray], at: int) -> None:
    """A resume point after the join (times continued by the reader) is found again: no seek by such a time."""
    from models.decode import ResumePoint

    path = hostile.joined_ts(tmp_path / "joined.ts", frames, parts=2)
    assert probe_video(path).times_may_jump
    with FrameReader(path, fps=5.0) as reader:
        straight = [(f.index, f.sample, f.time_s) for f in reader]
    last = next(s for s in straight if s[1] == at)
    resume = ResumePoint(time_s=last[2], index=last[0], sample=last[1])
    with FrameReader(path, fps=5.0, resume=resume) as reader:
        resumed = [(f.index, f.sample, f.time_s) for f in reader]
    assert resumed == straight[at + 1 :]


def test_stream_option_reaches_the_reader_and_keeps_crops(
    tmp_path: Path, frames: list[np.ndarray], random_weights_dir: Path
) -> None:
    """``affectlab analyze --stream 1``: the second stream is analysed, the first named; its crops are stored (a
    re-cut by time would read stream 0)."""
    import os
    import subprocess
    import sys

    from sqlalchemy import select

    from db.schema import Media
    from db.services import LabelStore

    root = Path(__file__).resolve().parents[1]
    path = hostile.two_streams(tmp_path / "two.mp4", frames[:10])
    url = f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"
    LabelStore(url).upgrade()
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "DATABASE_URL": url,
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(tmp_path / "data"),
    }
    cmd = [sys.executable, "-m", "affectlab", "analyze", str(path), "--study", "s", "--stream", "1", "--workers", "1"]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "stream 1 (h264 160x90) is analysed, not stream 0 (h264 320x180)" in proc.stderr, proc.stderr
    store = LabelStore(url)
    try:
        width, recut = store.transaction(lambda s: s.execute(select(Media.width, Media.recut_crops)).one(), write=False)
    finally:
        store.close()
    assert (width, recut) == (160, False)
