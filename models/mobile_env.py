"""The side environment of the LiteRT / ExecuTorch converters and TensorFlow: found, checked and run as a subprocess.

Why a side environment: tensorflow-cpu 2.21 requires ``h5py<3.15`` (AffectLab pins 3.16.0) and the converters bring
JAX, transformers, coremltools and older pins of typing-extensions, anyio and pydantic; litert-torch 0.10.0 accepts
``torch>=2.4,<2.15`` and executorch 1.5.1 names no torch pin (its torchao 0.18 works with 2.14), so both run on
AffectLab's torch 2.14.1, but installing them into AffectLab's environment would change packages the app uses.
``make mobile-env`` builds ``.venv-mobile`` from ``requirements-mobile.txt`` on top of AffectLab's environment (a
``.pth`` file makes the main environment's packages visible underneath, so torch is shared, not installed twice).

AffectLab never imports from it: ``models.mobile_export`` runs ``models.mobile_convert`` with its interpreter
(``Settings.mobile_python``, ``AFFECTLAB_MOBILE_PYTHON``), and the TensorFlow parity test runs ``tests/tf_mobilenet.py``
the same way.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.settings import child_env
from models.errors import AffectLabError

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = "requirements-mobile.txt"

CONVERTER_MODULES: dict[str, tuple[str, ...]] = {
    "litert": ("litert_torch", "ai_edge_litert"),
    "executorch": ("executorch",),
    "tensorflow": ("tensorflow", "keras"),
}
"""The modules each job needs in the side environment (the converter and its runtime)."""


class ConverterMissingError(AffectLabError):
    """The side environment, or a converter in it, is not installed; the message gives the command that installs it."""


def install_command() -> str:
    """The commands that build the side environment (what ``make mobile-env`` runs)."""
    return (
        "make mobile-env  (or: python3 -m venv .venv-mobile && .venv-mobile/bin/pip install -r "
        f"{REQUIREMENTS}, then set AFFECTLAB_MOBILE_PYTHON=.venv-mobile/bin/python if it lives elsewhere)"
    )


def missing_modules(python: Path, modules: Sequence[str]) -> list[str]:
    """The ``modules`` that ``python`` cannot find (all of them when ``python`` does not run); imports nothing."""
    if not python.is_file():
        return list(modules)
    code = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    try:
        proc = subprocess.run(
            [str(python), "-c", code, *modules], capture_output=True, text=True, timeout=120, env=side_env()
        )
    except (OSError, subprocess.TimeoutExpired):
        return list(modules)
    if proc.returncode != 0:
        return list(modules)
    return proc.stdout.split()


def require(job: str, python: Path) -> Path:
    """The side interpreter, once checked to hold ``job``'s modules (:data:`CONVERTER_MODULES`).

    Raises:
        ConverterMissingError: No interpreter there, or a module missing; the message says how to install them.
    """
    py = python
    missing = missing_modules(py, CONVERTER_MODULES[job])
    if missing:
        where = f"{py} does not exist" if not py.is_file() else f"{py} lacks {', '.join(missing)}"
        raise ConverterMissingError(
            f"the {job} converter is not installed ({where}); install it with: {install_command()}"
        )
    return py


def side_env() -> dict[str, str]:
    """The environment of a side process: AffectLab's checkout importable, quiet TensorFlow, no GPU grabbed."""
    env = child_env(path_first=str(ROOT))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def run(python: Path, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs ``python ARGS`` in the side environment from the checkout's root; output captured.

    Raises:
        ConverterMissingError: The interpreter could not be started.
        AffectLabError: It ran past ``timeout`` seconds (it is killed).
    """
    try:
        return subprocess.run(
            [str(python), *args], capture_output=True, text=True, timeout=timeout, env=side_env(), cwd=ROOT
        )
    except OSError as exc:
        raise ConverterMissingError(f"cannot start {python} ({exc}); install it with: {install_command()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise AffectLabError(f"{python} {' '.join(args)} ran past {timeout:.0f} s and was stopped") from exc
