"""Runtime settings, read once from the environment.

Every runtime knob of AffectLab lives here so that the CLI, the web app and the tests read the same values.

Environment variables:
    AFFECTLAB_DATA_DIR: Folder for the SQLite database, uploads and exports (default ``./data``).
    AFFECTLAB_WEIGHTS_DIR: Folder for verified model weights (default: the per-user cache,
        ``$XDG_CACHE_HOME/affectlab/weights`` or ``~/.cache/affectlab/weights``).
    DATABASE_URL: SQLAlchemy URL; default SQLite in the data folder. ``postgresql+psycopg://...`` for PostgreSQL.
    AFFECTLAB_DEVICE: ``cpu`` (default), ``cuda`` or ``cuda:N``.
    AFFECTLAB_MODEL: The default emotion model (default ``enet_b0_8_best_vgaf``).
    AFFECTLAB_STORE_CROPS: ``0`` for the features-only privacy mode (no face crops stored).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "enet_b0_8_best_vgaf"


def default_weights_dir() -> Path:
    """The per-user weights cache, used when neither the flag nor AFFECTLAB_WEIGHTS_DIR is given."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "affectlab" / "weights"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """AffectLab's runtime settings.

    Attributes:
        data_dir: Folder for the database, uploads and exports.
        weights_dir: Folder holding verified weights (safetensors) and their metadata.
        database_url: SQLAlchemy database URL.
        device: Torch device for inference.
        model: Name of the default emotion model.
        store_crops: Whether face crops are stored (False is the features-only privacy mode).
    """

    data_dir: Path = field(default_factory=lambda: Path("data"))
    weights_dir: Path = field(default_factory=default_weights_dir)
    database_url: str = ""
    device: str = "cpu"
    model: str = DEFAULT_MODEL
    store_crops: bool = True

    def __post_init__(self) -> None:
        if not self.database_url:
            url = f"sqlite:///{(self.data_dir / 'affectlab.sqlite3').resolve()}"
            object.__setattr__(self, "database_url", url)

    @classmethod
    def from_env(cls) -> Settings:
        """Builds the settings from the current environment."""
        data_dir = Path(os.environ.get("AFFECTLAB_DATA_DIR") or "data")
        weights = os.environ.get("AFFECTLAB_WEIGHTS_DIR")
        return cls(
            data_dir=data_dir,
            weights_dir=Path(weights) if weights else default_weights_dir(),
            database_url=os.environ.get("DATABASE_URL", ""),
            device=os.environ.get("AFFECTLAB_DEVICE") or "cpu",
            model=os.environ.get("AFFECTLAB_MODEL") or DEFAULT_MODEL,
            store_crops=_env_bool("AFFECTLAB_STORE_CROPS", True),
        )


def get_settings() -> Settings:
    """Returns settings read from the environment now (cheap; call it where a value is needed)."""
    return Settings.from_env()
