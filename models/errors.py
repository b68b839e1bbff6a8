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
            "--trust-unverified if you know where it comes from (that skips this hash check only; the file is still "
            "read through the allowlist of tensor and model classes and never runs code)."
        )
        self.name = name
        self.expected = expected
        self.actual = actual


class DownloadError(AffectLabError):
    """A download failed (network, HTTP status, truncated transfer, or another process downloading the same file).

    Nothing is trusted: what arrived stays in the ``downloads/`` folder as a ``.part`` file, which the next run
    resumes and checks against the registry's hash before using it.
    """


class CheckpointFormatError(AffectLabError):
    """A checkpoint file could not be read or converted."""


class UnsafeCheckpointError(CheckpointFormatError):
    """A checkpoint's pickle asks for a Python global outside the allowlist (it could run code); nothing ran.

    Attributes:
        global_name: The ``module.name`` the pickle asked for.
    """

    def __init__(self, global_name: str, source: str = "") -> None:
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}the checkpoint asks for {global_name}, which is not a tensor, container or model class that "
            "AffectLab allows, so it was refused before anything in it ran (also with --trust-unverified). A "
            "published checkpoint never needs it: delete this file and fetch the published one with "
            "`python -m models fetch NAME`, or re-save your own model as a state dict "
            "(`torch.save(model.state_dict(), path)`) and import that."
        )
        self.global_name = global_name
        self.source = source
