"""The ImageFolder export as training data: its images indexed by split and by a model's classes.

The export of ``python -m db export --format imagefolder`` (a zip or a folder) holds
``{train,validation,test}/<Class>/<file>.png`` (``val``/``valid`` are read as ``validation``; leading folders are
allowed). Class folders are matched to the model's labels by name, ignoring case; other names are reported and
skipped. Files whose suffix is not one of :data:`models.images.IMAGE_SUFFIXES` are not images and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from models.errors import AffectLabError, BadInputError
from models.images import IMAGE_SUFFIXES, load_image

Split = Literal["train", "validation", "test"]
"""The splits of an export."""

SPLIT_ALIASES: dict[str, Split] = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
MIN_CLASSES = 2
"""Fewest known classes in the train split."""


class NotEnoughDataError(AffectLabError):
    """The export holds too little usable data to fine-tune and judge a model; nothing was trained or saved."""


@dataclass(frozen=True)
class Sample:
    """One image of the export.

    Attributes:
        key: Its path inside the export (``split/Class/file``).
        split: ``train``, ``validation`` or ``test``.
        label: Index into the model's labels.
    """

    key: str
    split: Split
    label: int


class ImageFolderExport:
    """The images of an ImageFolder export (zip or folder), labelled with a model's classes."""

    def __init__(self, source: str | Path, labels: Sequence[str]) -> None:
        """Indexes the export (reads no image yet).

        Args:
            source: The zip file or the folder.
            labels: The model's class names; folders are matched to them ignoring case.

        Raises:
            BadInputError: ``source`` is neither a folder nor a readable zip file.
        """
        self.source = Path(source)
        self.labels = tuple(labels)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        by_name = {label.lower(): i for i, label in enumerate(self.labels)}
        if self.source.is_dir():
            self.is_zip = False
            keys = [p.relative_to(self.source).as_posix() for p in sorted(self.source.rglob("*")) if p.is_file()]
        elif self.source.is_file():
            self.is_zip = True
            try:
                with zipfile.ZipFile(self.source) as zf:
                    keys = sorted(n for n in zf.namelist() if not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as exc:
                raise BadInputError(str(source), f"not a readable zip file ({exc})") from None
        else:
            raise BadInputError(str(source), "no such file or folder; pass the ImageFolder export (zip or folder)")
        samples: list[Sample] = []
        skipped: Counter[str] = Counter()
        for key in keys:
            parts = key.split("/")
            if len(parts) < 3 or PurePosixPath(key).suffix.lower() not in IMAGE_SUFFIXES or parts[-1].startswith("."):
                continue
            split = SPLIT_ALIASES.get(parts[-3].lower())
            if split is None:
                continue
            label = by_name.get(parts[-2].lower())
            if label is None:
                skipped[f"{split}/{parts[-2]}"] += 1
                continue
            samples.append(Sample(key=key, split=split, label=label))
        self.samples = samples
        self.skipped = dict(sorted(skipped.items()))

    def split(self, name: Split) -> list[Sample]:
        """The samples of one split."""
        return [s for s in self.samples if s.split == name]

    def read(self, key: str) -> bytes:
        """The bytes of one file (a zip is opened once per process)."""
        if not self.is_zip:
            return (self.source / key).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.source)
            self._zip_pid = os.getpid()
        return self._zip.read(key)

    def load(self, sample: Sample) -> np.ndarray:
        """The RGB uint8 image of a sample.

        Raises:
            BadInputError: The file is not a readable image.
        """
        return load_image(self.read(sample.key), name=f"{self.source.name}:{sample.key}")

    def fingerprint(self, samples: Iterable[Sample]) -> str:
        """SHA-256 over the used files' names and labels (identifies the training data of a version)."""
        rows = sorted((s.key, self.labels[s.label]) for s in samples)
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zip"] = None  # DataLoader workers open their own handle
        return state


def check_enough(data: ImageFolderExport) -> None:
    """Refuses data that cannot train and judge a model.

    Raises:
        NotEnoughDataError: No known-class image, an empty train or test split, or fewer than two classes in train.
    """
    known = ", ".join(data.labels)
    skipped = ""
    if data.skipped:
        skipped = (
            " Skipped folders (not the model's classes): "
            + ", ".join(f"{k} ({v})" for k, v in data.skipped.items())
            + "."
        )
    if not data.samples:
        raise NotEnoughDataError(
            f"{data.source}: no image in train/validation/test/<Class>/ folders whose class is one of the model's "
            f"({known}).{skipped} Export the study with `python -m db export --format imagefolder`."
        )
    train, test = data.split("train"), data.split("test")
    classes = sorted({s.label for s in train})
    if len(classes) < MIN_CLASSES:
        raise NotEnoughDataError(
            f"{data.source}: the train split has {len(train)} images in {len(classes)} of the model's classes; at "
            f"least {MIN_CLASSES} classes are needed to fine-tune a classifier.{skipped} Label more faces of other "
            "classes and export again. Nothing was trained."
        )
    if not test:
        raise NotEnoughDataError(
            f"{data.source}: the test split is empty, so the fine-tuned model could not be compared with the "
            "original. Add media to the study (the export puts whole media items into the test split) and export "
            "again. Nothing was trained."
        )
