"""Named exceptions raised by ``models/``; each message says what to do next."""

from __future__ import annotations


class AffectLabError(Exception):
    """Base class of the errors AffectLab reports to users."""


class BadInputError(AffectLabError):
    """A file could not be used as input.

    Attributes:
        file: The file's name as given by the user.
        reason: Why it could not be used.
    """

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class WeightsMissingError(AffectLabError):
    """The weights of a registered model are not in the weights folder."""

    def __init__(self, name: str, weights_dir: str) -> None:
        super().__init__(
            f"no weights for model {name!r} in {weights_dir}. Fetch them with `python -m models fetch {name}` "
            f"or import a downloaded file with `python -m models import-checkpoint FILE --name {name}` "
            "(add --weights-dir DIR or set AFFECTLAB_WEIGHTS_DIR for another folder)."
        )
        self.name = name
        self.weights_dir = weights_dir


class HashMismatchError(AffectLabError):
    """A checkpoint's hash differs from the registry's."""

    def __init__(self, name: str, expected: str, actual: str, source: str) -> None:
        super().__init__(
            f"{source}: git blob SHA-1 {actual} does not match the registry's {expected} for {name!r}. "
            "The file is corrupt, truncated or a different release; download it again, or pass "
            "--trust-unverified if you know where it comes from (it will be unpickled)."
        )
        self.name = name
        self.expected = expected
        self.actual = actual


class DownloadError(AffectLabError):
    """A download failed (network, HTTP status or truncated transfer); nothing was kept."""


class CheckpointFormatError(AffectLabError):
    """A checkpoint file could not be read or converted."""
