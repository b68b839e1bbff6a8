"""The registry: unknown names are named errors that say what to do; one default model; no torch needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import AffectLabError
from models.registry import DEFAULT_MODEL, REGISTRY, UnknownModelError, get_spec

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_model_is_an_affectlab_error_that_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_spec("nope")
    assert isinstance(err.value, AffectLabError) and not isinstance(err.value, KeyError)
    msg = str(err.value)
    assert msg.startswith("unknown model 'nope'") and "python -m models list" in msg
    assert all(name in msg for name in REGISTRY)
    assert err.value.name == "nope"


def test_default_model_is_defined_once() -> None:
    from core.settings import Settings

    assert DEFAULT_MODEL in REGISTRY
    assert Settings.from_env({}).model == DEFAULT_MODEL
    defined_in = [
        path.relative_to(ROOT).as_posix()
        for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "models").rglob("*.py")]
        if "DEFAULT_MODEL = " in path.read_text()
    ]
    assert defined_in == ["core/settings.py"], "the default model is chosen in one place"


def test_settings_and_registry_import_no_torch() -> None:
    code = "import sys, core.settings, models.registry, models.weights; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
