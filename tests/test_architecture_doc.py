"""docs/ARCHITECTURE.md follows the code: every module of the packages is named in its package's section and has a
docstring whose first line says its one job."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "db", "webapp", "affectlab")


def _sections(text: str) -> dict[str, str]:
    """The text of each ``## package/`` section of the page, by package."""
    out: dict[str, str] = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        title = block.split("\n", 1)[0]
        for package in PACKAGES:
            if title.startswith(f"{package}/"):
                out[package] = block
    return out


def _modules(package: str) -> list[Path]:
    return [
        p
        for p in sorted((ROOT / package).rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and "migrations" not in p.relative_to(ROOT).parts
    ]


def test_every_module_is_on_the_architecture_page() -> None:
    sections = _sections((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert set(sections) == set(PACKAGES)
    missing = []
    for package in PACKAGES:
        for path in _modules(package):
            rel = path.relative_to(ROOT / package).as_posix()
            names = {f"`{rel}`", f"`{path.name}`"}
            if not any(n in sections[package] for n in names):
                missing.append(f"{package}/{rel}")
    assert missing == []


def test_every_module_says_its_job() -> None:
    silent = []
    for package in PACKAGES:
        for path in [*_modules(package), *(ROOT / package).rglob("__init__.py")]:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            if not doc or len(doc.splitlines()[0]) < 20:
                silent.append(path.relative_to(ROOT).as_posix())
    assert silent == []


def test_the_checker_sees_a_missing_module() -> None:
    sections = _sections("## models/\n| `a.py` | x |\n## db/\n## webapp/\n## affectlab/\n## core/\n")
    assert "`a.py`" in sections["models"] and "`a.py`" not in sections["db"]


def test_the_page_states_the_layers_the_boundary_test_enforces() -> None:
    """The page's "Layers, top to bottom" line names the packages in the order ``tests/test_boundaries.py`` checks."""
    from tests.test_boundaries import LAYERS

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    line = text.split("Layers, top to bottom:", 1)[1].split("Checked, not hoped", 1)[0]
    named = [m for m in re.findall(r"`([a-z]+)/`", line) if m in LAYERS]
    assert named == list(reversed(LAYERS))
