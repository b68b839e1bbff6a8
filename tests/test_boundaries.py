"""Package boundaries: models/ never imports db/ or webapp/; models/ and db/ never pull in streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_MODELS = ("db", "webapp", "streamlit", "affectlab.cli")


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join([*base, node.module] if node.module else base))
            else:
                out.add(node.module or "")
    return out


def _is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_import_walker_sees_nested_and_relative_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from db.services import LabelStore\n    from . import weights\n    import webapp.ui as ui\n"
    )
    assert imported_modules(probe, "models") == {"db.services", "models", "webapp.ui"}


def test_no_module_of_models_imports_db_or_webapp() -> None:
    offenders = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        for module in imported_modules(path):
            if any(_is_under(module, bad) for bad in FORBIDDEN_IN_MODELS):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_db_never_imports_streamlit_or_webapp() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "db").rglob("*.py"))
        for module in imported_modules(path)
        if _is_under(module, "streamlit") or _is_under(module, "webapp")
    ]
    assert offenders == []


def test_importing_models_db_and_the_clis_leaves_streamlit_out() -> None:
    code = """
import importlib, pkgutil, sys
import models, db
names = [m.name for pkg in (models, db) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if ".migrations" not in m.name and not m.name.endswith("__main__")]
for name in names + ["affectlab.cli", "affectlab.settings"]:
    importlib.import_module(name)
loaded = sorted(n for n in sys.modules if n == "streamlit" or n.startswith("streamlit."))
print(len(names), loaded)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(maxsplit=1)
    assert int(count) > 30 and loaded.strip() == "[]"


def test_no_package_module_edits_sys_path() -> None:
    """The packages are installed (``pip install -e .``): none of their modules reaches into ``sys.path``."""
    editing = []
    for package in ("models", "db", "webapp", "affectlab"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "path"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"
                ):
                    editing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert editing == []
