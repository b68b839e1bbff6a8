"""Named exceptions raised by ``db/``; each message says what to do next.

They derive from :class:`models.errors.AffectLabError` so that the web app and the command lines can report every
user-facing error of AffectLab the same way.
"""

from __future__ import annotations

from models.errors import AffectLabError


class StoreError(AffectLabError):
    """Base class of the label store's errors."""


class StudyNotFoundError(StoreError):
    """No study has the given name."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(repr(k) for k in known) if known else "none yet"
        super().__init__(
            f"no study named {name!r} (studies: {listed}); ingest media into it first with "
            f"`python -m db ingest ANALYSIS.json --study {name!r}`"
        )
        self.name = name


class NotFoundError(StoreError):
    """A face, track, media item or annotation id does not exist (any more)."""

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"no {what} with id {ident!r}; it may have been deleted. Reload the page or list them again.")
        self.what = what
        self.ident = ident


class InvalidLabelError(StoreError):
    """A correction holds a value outside its allowed range or set."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"invalid {field} {value!r}: {allowed}")
        self.field = field
        self.value = value


class NothingToUndoError(StoreError):
    """An undo found no active correction of that annotator to revert."""


class StoreBusyError(StoreError):
    """The database stayed locked (or kept failing to serialise) through every retry."""

    def __init__(self, attempts: int, detail: str) -> None:
        super().__init__(
            f"the database stayed busy through {attempts} attempts ({detail}); try again in a moment. If it keeps "
            "happening, another process holds a long write transaction: stop it, or move the team to PostgreSQL "
            "(set DATABASE_URL=postgresql+psycopg://...)."
        )
        self.attempts = attempts


class SchemaOutdatedError(StoreError):
    """The database has no tables yet or an older schema revision."""

    def __init__(self, url: str, current: str | None, head: str) -> None:
        super().__init__(
            f"database {url} is at schema revision {current or 'none (empty)'}, the code needs {head}; "
            "run `python -m db upgrade`"
        )


class FileRefusedError(StoreError):
    """A file (or one edit) refused whole, every problem named (the first 20 shown); nothing of it was written.

    Attributes:
        problems: One line per problem, each naming its line of the file.
    """

    REFUSED = "nothing changed, fix these and try again"

    def __init__(self, source: str, problems: list[str]) -> None:
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {self.REFUSED}:\n" + "\n".join(shown) + more)
        self.problems = problems


class ImportLabelsError(StoreError):
    """A labels file could not be imported; nothing of it was applied.

    Attributes:
        file: The file's name as given.
        line: 1-based line number of the bad row (the header is line 1), or None for file-level problems.
        reason: What is wrong.
    """

    def __init__(self, file: str, reason: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}; nothing of {file} was applied, fix it and import it again")
        self.file = file
        self.line = line
        self.reason = reason


class AnalysisFormatError(StoreError):
    """An analysis JSON (``python -m models analyze --json``) is malformed or names missing files."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class CropsUnavailableError(StoreError):
    """An image export was asked for but no face crops are stored (features-only privacy mode)."""

    def __init__(self, study: str, fmt: str, *, has_faces: bool = True) -> None:
        if not has_faces:
            super().__init__(f"study {study!r} has no faces yet, so the {fmt!r} export would be empty; ingest first")
            return
        super().__init__(
            f"study {study!r} has no stored face crops (features-only mode, AFFECTLAB_STORE_CROPS=0, or media "
            f"ingested without crops), so the {fmt!r} export cannot hold images; export csv, parquet or features "
            "instead"
        )


class FeaturesUnavailableError(StoreError):
    """A features export was asked for but no backbone features are stored."""

    def __init__(self, study: str) -> None:
        super().__init__(
            f"study {study!r} has no stored backbone features (media ingested with --no-features, or before ingest "
            "computed them, carry none); ingest the analysis JSON again with the model's weights present "
            "(`python -m db ingest ANALYSIS.json --study ...`), or export csv/parquet/imagefolder instead"
        )


class FeatureModelMissingError(StoreError):
    """Ingest was to compute backbone features with a model whose weights are not in the weights folder."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(
            f"cannot compute the backbone features of the faces analysed with {model!r}: {detail} Or pass "
            "--no-features to store the faces without features (fine-tuning and `python -m db export --format "
            "features` then leave them out)."
        )
        self.model = model


class BackupUnsupportedError(StoreError):
    """``backup`` only works on SQLite; PostgreSQL has its own tools."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"backup copies SQLite databases only, and {url} is not one; use pg_dump (or your provider's "
            "snapshots) for PostgreSQL"
        )


class NotAllowedError(StoreError):
    """An action that only a study owner may take was asked for by someone else."""

    def __init__(self, action: str) -> None:
        super().__init__(f"{action} is for study owners only; ask an owner, or enter the owners' code")
        self.action = action


class StoreOpenError(StoreError):
    """The database cannot be opened as an AffectLab store: the setting, the file or the server is at fault.

    The message names the database (``DATABASE_URL`` or its file), what is wrong, and what to do; nothing was
    written to it.
    """
