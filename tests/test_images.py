"""Image decoding: every Pillow mode, EXIF orientation, and bad files give a named BadInputError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import images
from models.errors import BadInputError
from models.images import load_image


@pytest.fixture(scope="module")
def face_rgb(single_face_jpg: Path) -> Image.Image:
    return Image.open(single_face_jpg).convert("RGB")


def _save(im: Image.Image, path: Path, fmt: str) -> Path:
    im.save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("1", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("YCbCr", "JPEG"),
    ],
)
def test_every_mode_becomes_rgb(face_rgb: Image.Image, tmp_path: Path, mode: str, fmt: str) -> None:
    if mode == "I;16":
        grey = np.asarray(face_rgb.convert("L"), dtype=np.uint16) * 257
        im = Image.fromarray(grey)
        assert im.mode.startswith("I;16")
    else:
        im = face_rgb.convert(mode)
    path = _save(im, tmp_path / f"img.{fmt.lower()}", fmt)
    arr = load_image(path)
    assert arr.dtype == np.uint8
    assert arr.shape == (face_rgb.height, face_rgb.width, 3)
    # The content survives: correlated with the original's grey levels, not a blank or saturated image.
    ref = np.asarray(face_rgb.convert("L"), dtype=np.float64).ravel()
    got = arr.astype(np.float64).mean(axis=2).ravel()
    # Mode 1 is dithered black and white, so only loosely correlated.
    assert np.corrcoef(ref, got)[0, 1] > (0.4 if mode == "1" else 0.9)


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[:, :15] = (10, 200, 30, 255)  # opaque green left half, fully transparent (black) right half
    path = _save(Image.fromarray(rgba), tmp_path / "a.png", "PNG")
    arr = load_image(path)
    assert tuple(arr[5, 5]) == (10, 200, 30)
    assert tuple(arr[5, 25]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))
    im.info["transparency"] = 0
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    arr = load_image(path)
    assert tuple(arr[0, 0]) == (250, 10, 10)
    assert tuple(arr[0, 7]) == (255, 255, 255)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(face_rgb: Image.Image, tmp_path: Path, orientation: int) -> None:
    # Store the pixels rotated, with the EXIF tag that says how to turn them upright.
    stored = {3: face_rgb.rotate(180), 6: face_rgb.rotate(90, expand=True), 8: face_rgb.rotate(-90, expand=True)}
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    stored[orientation].save(path, exif=exif)
    arr = load_image(path)
    assert arr.shape == (face_rgb.height, face_rgb.width, 3)
    diff = np.abs(arr.astype(int) - np.asarray(face_rgb, dtype=int)).mean()
    assert diff < 1.0


def test_bytes_and_file_objects(single_face_jpg: Path) -> None:
    data = single_face_jpg.read_bytes()
    a = load_image(data, "upload.jpg")
    b = load_image(io.BytesIO(data), "upload.jpg")
    c = load_image(single_face_jpg)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def _bad_files(tmp_path: Path, single_face_jpg: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.jpg"
    data = single_face_jpg.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    return {
        "empty": (empty, "empty"),
        "text": (text, "not an image"),
        "truncated": (truncated, "truncated"),
        "missing": (tmp_path / "missing.png", "no such file"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "missing"])
def test_bad_files_raise_named_errors(tmp_path: Path, single_face_jpg: Path, case: str) -> None:
    path, words = _bad_files(tmp_path, single_face_jpg)[case]
    with pytest.raises(BadInputError) as err:
        load_image(path)
    assert err.value.file == str(path)
    assert words in err.value.reason
    assert str(path) in str(err.value)


def test_decompression_bomb_limit(single_face_jpg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Image.open(single_face_jpg) as im:
        pixels = im.width * im.height
    monkeypatch.setattr(images, "MAX_FRAME_PIXELS", pixels - 1)
    with pytest.raises(BadInputError, match="decompression bombs"):
        load_image(single_face_jpg, "bomb.jpg")
    monkeypatch.setattr(images, "MAX_FRAME_PIXELS", pixels)
    assert load_image(single_face_jpg).shape[0] > 0


def test_pillow_hard_limit_also_reports(tmp_path: Path) -> None:
    # A PNG whose header declares 200 M pixels (cheap: mode 1, all zero) is refused before it is decoded.
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 10000)).save(path)
    with pytest.raises(BadInputError, match="decompression bombs"):
        load_image(path)


def _png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header is rewritten to declare ``width`` x ``height`` (78 bytes: a bomb's header)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_one_pixel_budget_for_stills_and_video_frames(tmp_path: Path) -> None:
    """A 9000x9000 PNG (81 Mpx) and an animated GIF whose canvas is 8000x8000 are refused from their headers, by
    name and with the limit; a picture at the budget is not."""
    from models.decode import FrameReader, is_video

    png = tmp_path / "bomb.png"
    png.write_bytes(_png_declaring(9000, 9000))
    with pytest.raises(BadInputError) as err:
        load_image(png)
    assert str(png) in str(err.value) and f"{images.MAX_FRAME_PIXELS:,}-pixel limit" in str(err.value)
    assert "9000 x 9000" in str(err.value)
    gif = tmp_path / "bomb.gif"
    frames = [Image.new("P", (4, 4), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = bytearray(buf.getvalue())
    data[6:10] = (8000).to_bytes(2, "little") + (8000).to_bytes(2, "little")  # the logical screen (canvas)
    gif.write_bytes(bytes(data))
    assert is_video(gif), "an over-budget GIF is read as a video (never decoded to decide), and refused there"
    with pytest.raises(BadInputError) as err:
        FrameReader(gif, "upload.gif")
    assert "upload.gif" in str(err.value) and "8000 x 8000" in str(err.value)
    assert f"{images.MAX_FRAME_PIXELS:,}-pixel limit" in str(err.value)
    side = int(images.MAX_FRAME_PIXELS**0.5)
    ok = tmp_path / "ok.png"
    Image.new("1", (side, side)).save(ok)
    assert load_image(ok).shape == (side, side, 3)


def _gif(path: Path, frames: int, side: int = 200) -> Path:
    """An animated GIF of ``frames`` frames of ``side`` x ``side`` (a few KB: many pixels per byte)."""
    from PIL import ImageDraw

    pictures = []
    for i in range(frames):  # a square that moves: no two frames alike (Pillow merges equal ones)
        picture = Image.new("L", (side, side), 0)
        ImageDraw.Draw(picture).rectangle((i * 3, 0, i * 3 + 20, 20), fill=255)
        pictures.append(picture)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=40, loop=0)
    return path


def test_pixel_total_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path that decodes a video takes each frame from the file's one budget: refused from the header before
    a frame is decoded, and stopped while decoding when the header understates (a lying header)."""
    from models.decode import FrameReader, frame_at, header_pixels
    from models.playable import to_browser_video

    gif = _gif(tmp_path / "many.gif", 30)
    announced = header_pixels(gif, "many.gif")
    assert announced >= 20 * 200 * 200, announced
    size = gif.stat().st_size
    monkeypatch.setattr(images, "MIN_FILE_PIXELS", 0)
    monkeypatch.setattr(images, "PIXELS_PER_BYTE", (10 * 200 * 200) // size)  # room for 10 frames
    assert images.file_pixel_budget(size) < announced
    with pytest.raises(BadInputError) as err:
        FrameReader(gif, "upload.gif")
    assert "upload.gif" in str(err.value) and "its header announces" in str(err.value)
    with pytest.raises(BadInputError, match="its header announces"):
        header_pixels(gif, "upload.gif")
    monkeypatch.setattr(images.PixelBudget, "plan", lambda *_a: None)  # a header that understates
    reader = FrameReader(gif, "upload.gif", fps=0)
    with pytest.raises(BadInputError) as err:
        for _ in reader:
            pass
    assert "upload.gif" in str(err.value) and "decode to" in str(err.value) and reader.frames_decoded <= 11
    with pytest.raises(BadInputError, match="decode to"):
        frame_at(gif, 1.1, "upload.gif")
    with pytest.raises(BadInputError, match="decode to"):
        to_browser_video(gif, tmp_path / "out", name="upload.gif")
    monkeypatch.undo()
    assert sum(1 for _ in FrameReader(gif, "upload.gif", fps=0)) == 30, "within the budget: all of it"


def test_pixels_per_client_per_hour(tmp_path: Path, single_face_jpg: Path) -> None:
    """One hourly budget per client for stills and video frames, charged from headers; nothing charged on refusal;
    another client has its own; the hour rolls on."""
    from models.decode import header_pixels
    from models.images import PixelLedger, image_header_pixels

    with Image.open(single_face_jpg) as im:
        still = im.width * im.height
    assert image_header_pixels(single_face_jpg.read_bytes(), "a.jpg") == still
    video = header_pixels(_gif(tmp_path / "v.gif", 5, 100), "v.gif")
    now = [0.0]
    ledger = PixelLedger(limit=still + video + 10, clock=lambda: now[0])
    ledger.charge("client:1.2.3.4", still, "a.jpg")
    ledger.charge("client:1.2.3.4", video, "v.gif")
    with pytest.raises(BadInputError) as err:
        ledger.charge("client:1.2.3.4", still, "b.jpg")
    assert "b.jpg" in str(err.value) and f"{ledger.limit:,}-pixel hourly limit" in str(err.value)
    assert "try again in 60 min" in str(err.value)
    assert ledger.used("client:1.2.3.4") == still + video, "a refusal charges nothing"
    ledger.charge("client:5.6.7.8", still, "b.jpg")
    now[0] = 3601.0
    ledger.charge("client:1.2.3.4", still, "b.jpg")
    assert ledger.used("client:1.2.3.4") == still
