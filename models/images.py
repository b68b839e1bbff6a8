"""Image decoding: any file Pillow reads becomes an upright RGB uint8 array, or a named error.

Every Pillow mode is converted to RGB (grey, palette, 16-bit, CMYK, ...); images with transparency are composited
on white, since the colour under a transparent pixel is arbitrary. EXIF orientation is applied, so boxes refer to the
upright image. Pillow's decompression-bomb guard is enforced: an image above ``MAX_IMAGE_PIXELS`` is refused.

Every still goes through :func:`check_image_file` (a file's size, then its header through Pillow's lazy open) before
its bytes are read or decoded: :func:`load_image` (both command lines, the app, exports, fine-tuning) and the analysis
service's ``prepare`` call it, so a 6 GB sparse ``.jpg`` or a huge canvas is refused by name at once.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import BadInputError

MAX_FRAME_PIXELS = 40_000_000
"""The one pixel budget of every decoded picture, stills and video frames alike (40 Mpx: 120 MB as RGB; an 8K
frame is 33 Mpx). Checked from the file's header before anything is decoded (:func:`check_pixels`)."""
MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS
"""The same budget under its older name."""
MAX_IMAGE_BYTES = 8 * MAX_FRAME_PIXELS + (64 << 20)
"""The largest still file read (384 MB): an uncompressed 16-bit RGBA picture at the pixel budget, plus 64 MB of
metadata. A larger "image" holds no picture AffectLab may decode, and is refused before a byte of it is read."""


def check_pixels(name: str, width: int, height: int, what: str = "image") -> None:
    """Refuses a picture over :data:`MAX_FRAME_PIXELS`, naming the file and the limit.

    Raises:
        BadInputError: ``width * height`` is over the budget.
    """
    if width * height > MAX_FRAME_PIXELS:
        raise BadInputError(
            name,
            f"its {what}s are {width} x {height} = {width * height:,} pixels, over the {MAX_FRAME_PIXELS:,}-pixel "
            "limit that guards the server against decompression bombs; downscale it first",
        )


MIN_FILE_PIXELS = 4_000_000_000
"""Pixels every file may decode in all, whatever its size (100 frames at the per-picture budget; 2 minutes of 1080p
at 30 fps)."""
PIXELS_PER_BYTE = 100_000
"""Pixels a file may decode in all per byte it holds, on top of :data:`MIN_FILE_PIXELS`. A recorded class at 720p
decodes a few hundred pixels per byte, a screen share of still slides a few thousand; a pixel bomb (a 1 KB GIF of a
huge canvas and many frames) millions."""


def file_pixel_budget(size_bytes: int) -> int:
    """The pixels a file of ``size_bytes`` may decode in all, frames of a video added up (see :class:`PixelBudget`)."""
    return MIN_FILE_PIXELS + PIXELS_PER_BYTE * max(0, size_bytes)


class PixelBudget:
    """The pixel budget of one file (one upload): per picture and in all.

    Each decoded picture within :data:`MAX_FRAME_PIXELS`, all of them together within :func:`file_pixel_budget` of the
    file's size. Every video decoding path takes each frame it decodes from one (:mod:`models.decode`,
    :mod:`models.playable`); a still is one picture.

    Attributes:
        name: The file's name for messages.
        size_bytes: The file's size.
        limit: Pixels it may decode in all.
        used: Pixels decoded so far.
    """

    def __init__(self, name: str, size_bytes: int) -> None:
        self.name, self.size_bytes = name, size_bytes
        self.limit = file_pixel_budget(size_bytes)
        self.used = 0
        self.frames = 0

    def _refuse(self, what: str) -> BadInputError:
        return BadInputError(
            self.name,
            f"{what}, over the {self.limit:,}-pixel limit for a file of {self.size_bytes:,} bytes "
            f"({MIN_FILE_PIXELS:,} plus {PIXELS_PER_BYTE:,} per byte) that guards the server against decompression "
            "bombs; shorten or downscale it first",
        )

    def plan(self, frames: float, width: int, height: int) -> None:
        """Refuses, from the header before anything is decoded, a file announcing more pixels than its budget.

        Raises:
            BadInputError: ``frames`` pictures of ``width`` x ``height`` are over the budget.
        """
        check_pixels(self.name, width, height, "frame")
        total = int(frames) * width * height
        if total > self.limit:
            raise self._refuse(f"its header announces {int(frames):,} frames of {width} x {height} = {total:,} pixels")

    def take(self, width: int, height: int, what: str = "frame") -> None:
        """Counts one decoded picture.

        Raises:
            BadInputError: The picture is over :data:`MAX_FRAME_PIXELS`, or the file's total is over its budget.
        """
        check_pixels(self.name, width, height, what)
        self.used += width * height
        self.frames += 1
        if self.used > self.limit:
            raise self._refuse(f"its first {self.frames:,} {what}s decode to {self.used:,} pixels")


def file_budget(path: str | Path, name: str) -> PixelBudget:
    """The :class:`PixelBudget` of the file at ``path`` (its size read now)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0
    return PixelBudget(name, size)


PIXELS_PER_HOUR = 1_000_000_000_000
"""Pixels one client may have decoded for it per hour, stills and video frames alike (:class:`PixelLedger`): about
six 90-minute 720p recordings at 30 fps (150 Gpx each: every frame is decoded, sampled or not), three at 1080p."""


class PixelLedger:
    """Pixels decoded per client over the last hour, charged from each file's header before it is decoded.

    The per-file :class:`PixelBudget` bounds one upload; this bounds what one client (a client address behind the
    guard, else a session) makes the shared server decode per hour, however many files or sessions it uses. A file's
    charge is what its header announces (a still's pixels, a video's frames x width x height), so a file that would
    pass the hour's budget is refused before a frame is decoded; a header that lies is stopped by its
    :class:`PixelBudget` as it decodes.

    Attributes:
        limit: Pixels per client per window.
        window_s: The window (an hour).
    """

    def __init__(
        self, limit: int = PIXELS_PER_HOUR, window_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._spent: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[tuple[float, int]]:
        spent = self._spent.setdefault(key, deque())
        while spent and now - spent[0][0] > self.window_s:
            spent.popleft()
        return spent

    def used(self, key: str) -> int:
        """Pixels charged to ``key`` within the window."""
        with self._lock:
            return sum(n for _, n in self._prune(key, self._clock()))

    def charge(self, key: str, pixels: int, name: str) -> None:
        """Charges ``pixels`` (from ``name``'s header) to ``key``.

        Raises:
            BadInputError: They would take ``key`` over :attr:`limit` within the window (nothing is charged).
        """
        with self._lock:
            now = self._clock()
            spent = self._prune(key, now)
            used = sum(n for _, n in spent)
            if used + pixels > self.limit:
                wait = (self.window_s - (now - spent[0][0])) / 60 if spent else self.window_s / 60
                raise BadInputError(
                    name,
                    f"it would decode {pixels:,} pixels, and {used:,} were decoded for you in the last hour: over the "
                    f"{self.limit:,}-pixel hourly limit that shares the server between users; try again in "
                    f"{max(1, round(wait))} min, or analyse it with the command line",
                )
            spent.append((now, pixels))
            if len(self._spent) > 10_000:  # forget clients with nothing in the window
                for k in [k for k, q in self._spent.items() if not q]:
                    del self._spent[k]


def image_header_pixels(src: bytes | str | Path, name: str) -> int:
    """Pixels a still announces in its header (all frames of a multi-frame file), read without decoding.

    Raises:
        BadInputError: A frame is over :data:`MAX_FRAME_PIXELS`.
    """
    try:
        im = _open(src)
    except Exception:  # not an image: its decoder says why, with no pixels charged
        return 0
    with im:
        check_pixels(name, im.width, im.height)
        return int(im.width) * int(im.height) * max(1, int(getattr(im, "n_frames", 1) or 1))


ImageSource = str | Path | bytes | BinaryIO

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".avif"})
"""Suffixes of the image files the web app accepts, ``python -m affectlab analyze`` picks from folders and full
fine-tuning reads from an ImageFolder export (:mod:`models.train_data`)."""


def _display_name(src: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, str | Path):
        return str(src)
    return getattr(src, "name", "<upload>")


def _open(src: ImageSource) -> Image.Image:
    if isinstance(src, bytes):
        return Image.open(io.BytesIO(src))
    if isinstance(src, str | Path):
        return Image.open(Path(src))
    return Image.open(src)


def _size(src: ImageSource) -> int | None:
    """The size in bytes of a path's file, of bytes, or of a seekable file object (None when unknown)."""
    try:
        if isinstance(src, bytes):
            return len(src)
        if isinstance(src, str | Path):
            return Path(src).stat().st_size
        here = src.tell()
        end = src.seek(0, 2)
        src.seek(here)
        return int(end)
    except (OSError, AttributeError, ValueError):
        return None


def check_image_file(src: ImageSource, name: str) -> None:
    """Refuses a still over :data:`MAX_IMAGE_BYTES`, or whose header announces more than :data:`MAX_FRAME_PIXELS`.

    Reads the header only (Pillow's lazy open); a file Pillow does not recognise passes, for its decoder to name.

    Raises:
        BadInputError: Too large a file or picture, named with the limit.
    """
    size = _size(src)
    if size is not None and size > MAX_IMAGE_BYTES:
        raise BadInputError(
            name,
            f"{size:,} bytes is larger than any still image within the {MAX_FRAME_PIXELS:,}-pixel limit needs "
            f"({MAX_IMAGE_BYTES:,} bytes): not analysed; if it is a picture, downscale or recompress it",
        )
    with contextlib.ExitStack() as stack:
        if isinstance(src, str | Path):
            fp: BinaryIO = stack.enter_context(Path(src).open("rb"))
        elif isinstance(src, bytes):
            fp = io.BytesIO(src)
        else:
            fp = src
            stack.callback(src.seek, 0)
        try:
            im = Image.open(_HeaderReader(fp, MAX_HEADER_BYTES))  # type: ignore[arg-type]
        except _HeaderTooLong:
            raise BadInputError(
                name,
                f"its header runs past {MAX_HEADER_BYTES:,} bytes without reaching the picture: a damaged or padded "
                "file, not analysed",
            ) from None
        except Exception:  # not an image Pillow knows: the decoder says why
            return
        with im:
            check_pixels(name, im.width, im.height)


MAX_HEADER_BYTES = 8 << 20
"""Bytes Pillow may read to find a still's size (JPEG segments, TIFF directories): a JPEG start followed by gigabytes
of padding is scanned byte by byte by Pillow's lazy open, for minutes; past this it is refused."""


class _HeaderTooLong(Exception):
    pass


class _HeaderReader:
    """A file read for its header only: reading more than ``limit`` bytes raises :class:`_HeaderTooLong`."""

    def __init__(self, fp: BinaryIO, limit: int) -> None:
        self._fp, self._left = fp, limit

    def read(self, n: int = -1) -> bytes:
        data = self._fp.read(n if n is not None and n >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise _HeaderTooLong
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def _is_empty(src: ImageSource) -> bool:
    if isinstance(src, bytes):
        return len(src) == 0
    if isinstance(src, str | Path):
        p = Path(src)
        return p.is_file() and p.stat().st_size == 0
    return False


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scales 16/32-bit integer and float greyscale images to 8-bit by their value range."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = (arr.astype(np.float32) / 257.0).round()
    else:
        arr = arr.astype(np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        out = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def to_rgb(im: Image.Image) -> Image.Image:
    """Converts a Pillow image of any mode to RGB (transparency composited on white)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _to_8bit(im).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


_EXIF_ORIENTATION = 0x0112


def load_image(src: ImageSource, name: str | None = None) -> np.ndarray:
    """Decodes an image file into an upright RGB uint8 array of shape (H, W, 3).

    Args:
        src: A path, the file's bytes, or a binary file object (e.g. a Streamlit upload).
        name: The file name to report in errors (defaults to the path).

    Returns:
        The decoded image, EXIF orientation applied.

    Raises:
        BadInputError: The file is missing, empty, not an image, truncated, or above the pixel limit.
    """
    shown = _display_name(src, name)
    if isinstance(src, str | Path) and not Path(src).is_file():
        raise BadInputError(shown, "no such file")
    if _is_empty(src):
        raise BadInputError(shown, "the file is empty")
    check_image_file(src, shown)
    try:
        im = _open(src)
        check_pixels(shown, im.width, im.height)  # from the header: nothing decoded yet
        im.load()
        if im.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
            # Only when there is something to undo: exif_transpose copies the whole image even for "upright".
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
    except Image.DecompressionBombError:
        raise BadInputError(
            shown,
            f"the image is larger than the {MAX_FRAME_PIXELS:,}-pixel limit that guards against decompression "
            "bombs; downscale it first",
        ) from None
    except UnidentifiedImageError:
        raise BadInputError(
            shown, "not an image format AffectLab reads (JPEG, PNG, WebP, BMP, TIFF, GIF, AVIF)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(shown, f"damaged or truncated image data ({exc})") from None
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(shown, f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)
