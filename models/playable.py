"""Browser-playable copies of videos that browsers' ``<video>`` element cannot play (animated GIFs).

An animated GIF is analysed as a video, but a browser's video player does not play a GIF. :func:`to_browser_video`
re-encodes every frame, with its own display time, to H.264 in MP4 (``libx264``, ``yuv420p``, fast start), or,
where the installed PyAV lacks an H.264 encoder, to VP9 in WebM; the copy has exactly the source's frames.
:func:`needs_conversion` says which files need it. The caller (the label store) keeps the copy beside the file.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Literal

from models.errors import BadInputError
from models.images import file_budget

CONVERT_SUFFIXES = frozenset({".gif"})
"""Video files a browser's ``<video>`` element does not play: converted for display."""

BrowserCodec = Literal["libx264", "libopenh264", "libvpx-vp9", "libvpx"]
"""Video encoders whose output every current browser plays."""
BrowserContainer = Literal["mp4", "webm"]

_ENCODERS: tuple[tuple[BrowserCodec, BrowserContainer, str], ...] = (
    ("libx264", "mp4", ".mp4"),
    ("libopenh264", "mp4", ".mp4"),
    ("libvpx-vp9", "webm", ".webm"),
    ("libvpx", "webm", ".webm"),
)
"""(encoder, container, suffix) in order of preference; every one plays in current browsers."""


def needs_conversion(path: str | Path) -> bool:
    """Whether a kept video file must be converted before a browser can play it (an animated GIF)."""
    return Path(path).suffix.lower() in CONVERT_SUFFIXES


def browser_encoder() -> tuple[BrowserCodec, BrowserContainer, str]:
    """The first available (encoder, container, suffix) of the preference list.

    Raises:
        BadInputError: PyAV has none of the encoders (reinstall the ``av`` wheel, which bundles them).
    """
    import av

    for codec, fmt, suffix in _ENCODERS:
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # UnknownCodecError, or a build without the encoder
            continue
        return codec, fmt, suffix
    raise BadInputError(
        "video", "no browser video encoder (libx264 or libvpx) in this PyAV build; reinstall the `av` wheel"
    )


def browser_suffix() -> str:
    """The suffix :func:`to_browser_video` writes (``.mp4``, or ``.webm`` without an H.264 encoder)."""
    return browser_encoder()[2]


def _even(n: int) -> int:
    return max(2, n - n % 2)


def to_browser_video(src: str | Path, dst: str | Path, *, name: str | None = None) -> Path:
    """Re-encodes ``src`` (e.g. an animated GIF) into ``dst``, a video every browser plays, frame for frame.

    Every decoded frame is encoded once at its own presentation time (a GIF's per-frame delays are kept), scaled to
    even dimensions (H.264 4:2:0 needs them; a transparent pixel becomes black). ``dst`` is written to a temporary
    file in its folder (mode 0600) and moved into place with ``os.replace``.

    Args:
        src: The source video.
        dst: The target; its suffix should be :func:`browser_suffix`.
        name: The file's name for messages (default ``src``).

    Returns:
        ``dst``.

    Raises:
        BadInputError: ``src`` cannot be decoded or has no frame, or no encoder is available.
    """
    import av

    name = name or str(src)
    dst = Path(dst)
    codec, fmt, _suffix = browser_encoder()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        n = _encode(src, tmp, codec, fmt, name)
        if n == 0:
            raise BadInputError(name, "no decodable video frame")
        os.chmod(tmp, 0o600)
        os.replace(tmp, dst)
    except av.FFmpegError as exc:
        raise BadInputError(name, f"cannot be converted for the browser ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _encode(src: str | Path, out_path: Path, codec: BrowserCodec, fmt: BrowserContainer, name: str) -> int:
    import av

    try:
        inp = av.open(str(src), mode="r")
    except av.FFmpegError as exc:
        raise BadInputError(name, f"not a video FFmpeg can read ({exc.strerror or exc})") from None
    options = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with inp, av.open(str(out_path), mode="w", format=fmt, options=options) as out:
        if not inp.streams.video:
            raise BadInputError(name, "no video stream")
        ist = inp.streams.video[0]
        time_base = ist.time_base or Fraction(1, 100)
        ost = None
        last_pts: int | None = None
        first_pts: int | None = None
        n = 0
        budget = file_budget(src, name)
        for frame in inp.decode(ist):
            budget.take(frame.width, frame.height)
            if ost is None:
                rate = ist.average_rate or ist.guessed_rate or Fraction(10)
                ost = out.add_stream(codec, rate=rate)
                ost.width, ost.height = _even(frame.width), _even(frame.height)
                ost.pix_fmt = "yuv420p"
                ost.time_base = time_base
                ost.codec_context.time_base = time_base
                if codec == "libx264":
                    ost.options = {"crf": "23", "preset": "veryfast"}
            pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + 1)
            first_pts = pts if first_pts is None else first_pts
            pts -= first_pts
            if last_pts is not None and pts <= last_pts:  # zero delays: keep the frame, one tick later
                pts = last_pts + 1
            last_pts = pts
            img = frame.reformat(width=ost.width, height=ost.height, format="yuv420p")
            img.pts = pts
            img.time_base = time_base
            for packet in ost.encode(img):
                out.mux(packet)
            n += 1
        if ost is not None:
            for packet in ost.encode(None):
                out.mux(packet)
    return n
