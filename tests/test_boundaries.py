"""Package boundaries: each layer imports only the layers below it (webapp -> affectlab -> db -> models -> core), only
core/settings.py touches the environment, and models/ and db/ never pull in streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_MODELS = ("db", "webapp", "streamlit", "affectlab")
LAYERS = ("core", "models", "db", "affectlab", "webapp")
"""Bottom to top: a module may import its own layer and those below it, never one above."""
SETTINGS = Path("core/settings.py")


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
for name in names + ["affectlab.cli", "core.settings"]:
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
    for package in LAYERS:
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


def upward_imports(root: Path = ROOT) -> list[str]:
    """Every import of a layer above the importing module's own (:data:`LAYERS`), at any depth."""
    out = []
    for level, package in enumerate(LAYERS):
        above = LAYERS[level + 1 :]
        for path in sorted((root / package).rglob("*.py")):
            for module in imported_modules(path, ".".join(path.relative_to(root).with_suffix("").parts[:-1])):
                if any(_is_under(module, up) for up in above):
                    out.append(f"{path.relative_to(root)} imports {module}")
    return out


def environment_touches(root: Path = ROOT) -> list[str]:
    """Every ``os.environ`` / ``os.getenv`` / ``os.putenv`` / ``os.unsetenv`` (or the names imported from os) outside
    core/settings.py."""
    names = {"environ", "getenv", "putenv", "unsetenv", "environb"}
    out = []
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            if path.relative_to(root) == SETTINGS:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                hit = (isinstance(node, ast.Attribute) and node.attr in names) or (
                    isinstance(node, ast.ImportFrom)
                    and node.module == "os"
                    and any(a.name in names for a in node.names)
                )
                if hit:
                    out.append(f"{path.relative_to(root)}:{node.lineno}")
    return out


ENTRY_POINTS = frozenset(
    {
        "models/cli.py",  # python -m models
        "db/cli.py",  # python -m db
        "affectlab/cli.py",  # python -m affectlab
        "affectlab/distribute.py",  # a worker process or Ray actor, at its start
        "webapp/resources.py",  # the app: once per script run (``resources.settings``)
        "webapp/serve.py",  # the server guard, at server start
        "webapp/demo_sweep.py",  # python -m webapp.demo_sweep
    }
)
"""Where ``Settings.from_env()`` may be called: the tops of processes and runs; everything below takes arguments."""


def settings_reads(root: Path = ROOT) -> list[str]:
    """Every ``Settings.from_env()`` (the one reader of the environment's settings) outside :data:`ENTRY_POINTS`."""
    out = []
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel == SETTINGS or rel.as_posix() in ENTRY_POINTS:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_env":
                    out.append(f"{rel}:{node.lineno}")
    return out


def test_settings_are_read_at_the_top_and_passed_down() -> None:
    """Issue 20 item 2: models/, db/ and the services below the entry points take the settings' values as arguments."""
    assert settings_reads() == []


def test_no_layer_imports_one_above_it() -> None:
    assert upward_imports() == []


def test_only_the_settings_module_touches_the_environment() -> None:
    assert environment_touches() == []


def test_the_layer_checks_see_a_breach(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "core" / "settings.py").write_text("import os\nX = os.environ.get('A')\n")
    (tmp_path / "models" / "m.py").write_text("def f():\n    from affectlab.settings import Settings\n")
    (tmp_path / "db" / "d.py").write_text("from os import getenv\nimport webapp.ui\n")
    (tmp_path / "webapp" / "w.py").write_text("import os\nos.environ['X'] = '1'\nfrom db import repo\n")
    assert upward_imports(tmp_path) == ["models/m.py imports affectlab.settings", "db/d.py imports webapp.ui"]
    assert environment_touches(tmp_path) == ["db/d.py:1", "webapp/w.py:2"]
    (tmp_path / "models" / "cli.py").write_text("from core.settings import Settings\nS = Settings.from_env()\n")
    (tmp_path / "models" / "w.py").write_text(
        "def f():\n    from core.settings import Settings\n    return Settings.from_env().x\n"
    )
    assert settings_reads(tmp_path) == ["models/w.py:3"]
