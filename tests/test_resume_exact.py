"""Resume by exact position (issue 21 item 3): the seam is found by frame number and timestamp, never a rate-based
tolerance. Recordings with a variable rate, a 1-hour gap, duplicate timestamps and a 1 fps screen recording, stopped
after several frames, go on with exactly the frames (numbers, samples, times, pixels) a straight run has after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.decode import FrameReader, ResumePoint
from models.seam import Seam, packet_times, place_among_equal
from tests.videos import write_video

W, H = 64, 48


def _frames(n: int) -> list[np.ndarray]:
    """Frames that differ from each other (a moving bar on a gradient), so a shifted frame is seen."""
    out = []
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0] = np.linspace(0, 200, W, dtype=np.uint8)[None, :]
        img[:, (3 * i) % W, :] = 255
        img[(2 * i) % H, :, 1] = 255
        out.append(img)
    return out


def _vfr(path: Path) -> Path:
    gaps = [0.04, 0.5, 0.1, 0.033, 0.9, 0.2, 0.04, 0.04, 1.7, 0.08]
    times = np.cumsum([0.0] + [gaps[i % len(gaps)] for i in range(47)]).tolist()
    return write_video(path, _frames(48), fps=10, times=times, options={"g": "6"})


def _gap(path: Path) -> Path:
    times = [i * 0.1 for i in range(20)] + [3600.0 + i * 0.1 for i in range(20)]  # a class paused for an hour
    return write_video(path, _frames(40), fps=10, times=times, options={"g": "8"})


def _duplicates(path: Path) -> Path:
    """Runs of frames sharing one timestamp (a capture tool stamping at a coarse clock): intra-only frames encoded
    with distinct times, then remuxed into Matroska with the shared ones."""
    import av

    times = [round(0.25 * (i // 3) + (0.1 if i % 7 == 0 else 0.0), 3) for i in range(45)]
    times = [max(times[: i + 1]) for i in range(len(times))]
    tmp = write_video(
        path.with_suffix(".tmp.mkv"), _frames(45), fps=10, codec="mjpeg", times=[i / 10 for i in range(45)]
    )
    with av.open(str(tmp)) as src, av.open(str(path), "w") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        packets = [p for p in src.demux(ist) if p.size]
        for p, t in zip(packets, times, strict=True):
            p.pts = p.dts = round(t / ist.time_base)
            p.stream = ost
            dst.mux(p)
    tmp.unlink()
    return path


def _screen(path: Path) -> Path:
    return write_video(path, _frames(40), fps=1, options={"g": "10"})  # 1 fps screen recording, keyframe per 10 s


MAKERS = {"vfr": _vfr, "gap": _gap, "duplicates": _duplicates, "screen": _screen}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def recording(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = request.param
    suffix = ".mkv" if name == "duplicates" else ".mp4"
    return name, MAKERS[name](tmp_path_factory.mktemp("exact") / f"{name}{suffix}")


def _read(path: Path, fps: float | None, resume: ResumePoint | None = None) -> tuple[list[tuple], int]:
    with FrameReader(path, fps=fps, resume=resume) as reader:
        got = [(f.index, f.sample, f.time_s, int(f.image.astype(np.int64).sum())) for f in reader]
        return got, reader.frames_decoded


def test_the_recordings_are_what_they_claim(recording: tuple[str, Path]) -> None:
    name, path = recording
    times = packet_times(path)
    assert times is not None and len(times) >= 40
    gaps = np.diff(times)
    if name == "gap":
        assert gaps.max() > 3500
    if name == "duplicates":
        assert (gaps == 0).sum() >= 10
    if name == "vfr":
        assert gaps.min() < 0.05 < 0.5 < gaps.max()
    if name == "screen":
        assert np.allclose(gaps, 1.0)


@pytest.mark.parametrize("fps", [5.0, None])
def test_stopped_anywhere_resumes_with_the_frames_of_a_straight_run(recording: tuple[str, Path], fps) -> None:
    _, path = recording
    straight, decoded = _read(path, fps)
    assert len(straight) > 8
    for k in sorted({1, 2, 3, len(straight) // 3, len(straight) // 2, len(straight) - 3, len(straight) - 2}):
        index, sample, time_s, _ = straight[k]
        resumed, resumed_decoded = _read(path, fps, ResumePoint(time_s=time_s, index=index, sample=sample))
        assert resumed == straight[k + 1 :], f"stopped after sample {k} (frame {index}, {time_s:.3f} s)"
        if k == len(straight) - 3:
            assert resumed_decoded < decoded  # it seeked, not decoded again from the start
    last = straight[-1]
    assert _read(path, fps, ResumePoint(time_s=last[2], index=last[0], sample=last[1]))[0] == []


def test_a_seek_that_lands_past_the_resume_frame_decodes_from_the_start() -> None:
    seam = Seam(1.0, 10, 1e-4, lambda: None)
    assert list(seam.feed(1.5, "a")) == [] and seam.lost  # the first frame after the seek is already after it
    seam = Seam(1.0, 10, 1e-4, lambda: None)
    assert list(seam.feed(None, "a")) == [] and seam.lost  # no timestamp: nothing to place the seam by
    seam = Seam(1.0, 10, 1e-4, lambda: None)
    list(seam.feed(0.5, "a"))
    assert list(seam.end()) == [] and seam.lost  # the resume frame never came


def test_equal_timestamps_are_told_apart_by_frame_number() -> None:
    times = [0.0, 0.1, 0.1, 0.1, 0.2]
    assert [place_among_equal(times, i, times[i], 1e-4) for i in range(5)] == [0, 0, 1, 2, 0]
    assert place_among_equal(times, 2, 0.15, 1e-4) is None  # the stored time is not that frame's: not placed
    seam = Seam(0.1, 2, 1e-4, lambda: 1)
    out = [x for t, f in [(0.0, "a"), (0.1, "b"), (0.1, "c"), (0.1, "d"), (0.2, "e")] for x in seam.feed(t, f)]
    assert out == [(3, 0.1, "d"), (4, 0.2, "e")]
