"""Helpers of the web app tests: an AppTest of webapp/app.py on temporary data and weights folders."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from streamlit.testing.v1 import AppTest

if TYPE_CHECKING:
    from db.services import LabelStore

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "webapp" / "app.py")
TIMEOUT = 240
"""Seconds per script run: the first loads MTCNN and the emotion model on a shared CPU."""

ACCESS_ENV = (
    "AFFECTLAB_ACCESS_CODE",
    "AFFECTLAB_OWNER_CODE",
    "AFFECTLAB_ANNOTATORS",
    "AFFECTLAB_OWNERS",
    "AFFECTLAB_STUDY",
    "AFFECTLAB_ALLOW_OPEN",
    "SPACE_ID",
    "DATABASE_URL",
    "AFFECTLAB_STORE_CROPS",
    "AFFECTLAB_MODEL",
    "AFFECTLAB_DEVICE",
)


def use_folders(monkeypatch: pytest.MonkeyPatch, data_dir: Path, weights_dir: Path) -> None:
    """Points the app at ``data_dir`` and ``weights_dir`` and clears every access setting of the environment."""
    for name in ACCESS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(weights_dir))


def new_app(**secrets: object) -> AppTest:
    """A fresh AppTest of the whole app (main script, sidebar, router), not run yet."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if secrets:
        at.secrets = dict(secrets)
    return at


def page(at: AppTest, name: str) -> AppTest:
    """Runs ``at`` on page ``name`` (``analyze``, ``review``, ``dataset``, ``model_weights``)."""
    if not at._tree:  # switch_page needs one run first
        at.run()
    at.switch_page(f"views/{name}.py")
    return at.run()


def no_exception(at: AppTest) -> None:
    """Fails with the app's own error message when a script run raised."""
    assert not at.exception, [e.value for e in at.exception]


def store_for(data_dir: Path):
    """A label store on the SQLite database of ``data_dir`` (what the app opened)."""
    from core.settings import Settings
    from db.services import LabelStore

    s = Settings(data_dir=data_dir, weights_dir=Path(os.devnull))
    return LabelStore(s.database_url, data_dir=data_dir)


@contextlib.contextmanager
def opened_store(data_dir: Path) -> Iterator[LabelStore]:
    """The migrated label store of ``data_dir`` for the block, closed after it (also when the block fails)."""
    store = store_for(data_dir)
    try:
        store.upgrade()
        yield store
    finally:
        store.close()


def stored_data(tmp_path: Path, fill: Callable[[LabelStore], T]) -> tuple[Path, T]:
    """A new data folder whose store ``fill`` wrote (a study, recordings...); returns it and what ``fill`` returned."""
    data = tmp_path / "data"
    data.mkdir()
    with opened_store(data) as store:
        return data, fill(store)


def page_on(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> AppTest:
    """The whole app pointed at ``data_dir`` and ``weights_dir``, run on page ``name`` (see :func:`page`)."""
    use_folders(monkeypatch, data_dir, weights_dir)
    return page(new_app(), name)


def analyze_into(data_dir: Path, weights_dir: Path, files: list[Path], study: str = "default") -> list[int]:
    """Analyses files straight through the services (no AppTest) and returns their media ids."""
    from models.analysis import AnalysisSession
    from webapp.services import analysis

    store = store_for(data_dir)
    store.upgrade()
    session = AnalysisSession.open("enet_b0_8_best_vgaf", weights_dir)
    ids = []
    for f in files:
        out = analysis.analyze_upload(
            analysis.Upload(f.name, f.read_bytes()),
            study=study,
            store=store,
            session=session,
            media_dir=data_dir.resolve() / "media",
        )
        assert out.error is None, out.error
        ids.append(out.media_id)
    store.close()
    return ids


def fresh_data_dir(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> Path:
    """A copy of a prepared data folder for one test, with the app pointed at it and at ``weights_dir``."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(template, data)
    use_folders(monkeypatch, data, weights_dir)
    return data
