"""The store split by concern (issue 20 item 3): focused services, none over 25 public methods, one transaction rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db.service_base import Service, StoreBase
from db.services import LabelStore
from tests.pg import fake_results, png_bytes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "db", "affectlab", "webapp/services")
MAX_PUBLIC = 25


def public_methods(cls: ast.ClassDef) -> list[str]:
    """The public methods a class defines itself (properties and static methods count, dunders do not)."""
    return [
        n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
    ]


def oversized_classes(root: Path, packages: tuple[str, ...]) -> list[str]:
    """``path:Class (n)`` for every class under ``packages`` with more than :data:`MAX_PUBLIC` public methods."""
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and len(public_methods(node)) > MAX_PUBLIC:
                    out.append(f"{path.relative_to(root)}:{node.name} ({len(public_methods(node))})")
    return out


def test_no_class_has_more_than_25_public_methods() -> None:
    assert oversized_classes(ROOT, PACKAGES) == []


def test_the_size_check_sees_a_class_over_the_limit(tmp_path: Path) -> None:
    body = "".join(f"    def m{i}(self):\n        return {i}\n" for i in range(MAX_PUBLIC + 1))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "big.py").write_text(f"class Big:\n{body}", encoding="utf-8")
    (tmp_path / "pkg" / "small.py").write_text("class Small:\n    def a(self):\n        return 1\n", encoding="utf-8")
    assert oversized_classes(tmp_path, ("pkg",)) == [f"pkg/big.py:Big ({MAX_PUBLIC + 1})"]


def test_the_store_is_its_services_and_its_plumbing_only() -> None:
    store = LabelStore("sqlite://")
    names = {"recordings", "ingest", "review", "classroom", "exports", "upkeep"}
    services = {name: getattr(store, name) for name in names}
    assert all(isinstance(s, Service) for s in services.values())
    assert all(getattr(store, name) is s for name, s in services.items()), "each service made once"
    # The store adds no action of its own beside its plumbing: every user action is a service's.
    own = {n for n in vars(LabelStore) if not n.startswith("_")}
    assert own == names | {"from_settings"}, own
    assert {n for n in vars(StoreBase) if not n.startswith("_")} == {"close", "upgrade", "transaction"}
    names = [m for s in services.values() for m in vars(type(s)) if not m.startswith("_")]
    assert len(names) == len(set(names)), "one owner per action"


def test_every_service_runs_in_the_stores_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path)
    store.upgrade()
    try:
        seen: list[bool] = []
        real = store.transaction

        def counting(fn, *, write=True):  # type: ignore[no-untyped-def]
            seen.append(write)
            return real(fn, write=write)

        monkeypatch.setattr(store, "transaction", counting)
        rep = store.ingest.ingest_results("s", png_bytes(1), "a.png", fake_results("a.png", [(1, 1, 40, 40)], ["Fear"]))
        face = store.recordings.faces("s")[0]
        store.review.correct_face(face.face_id, "alice", label="Happiness")
        assert store.exports.stats("s").counts["faces"] == 1
        assert store.classroom.segments("s") == []
        assert store.upkeep.keep_video_crops("s") is False
        assert rep.faces_new == 1
        # ingest, faces, correct_face, stats, segments, keep_video_crops: writes and reads through the one rule
        assert seen == [True, False, True, False, False, False]
    finally:
        store.close()
