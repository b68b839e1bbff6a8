"""Start-up: with default settings on the CPU, analysing an image never imports torch, timm or torchvision.

The ONNX files (the detector's three nets, the emotion model's export and head) are made once, on first use or by
``python -m models fetch``; every later process runs on ONNX Runtime and NumPy only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from db.services import LabelStore

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "facenet_pytorch")

CHECK = """
import sys
from {module} import main
rc = main({argv!r})
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
sys.exit(rc)
"""


def _run(module: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for key in ("AFFECTLAB_BACKEND", "AFFECTLAB_DEVICE", "AFFECTLAB_DETECT_EVERY"):
        full.pop(key, None)  # the defaults
    code = CHECK.format(module=module, argv=argv, heavy=HEAVY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=ROOT, timeout=600)


def test_models_analyze_defaults_import_no_torch(exported_weights: Path, multi_face_jpg: Path) -> None:
    proc = _run("models.cli", ["analyze", str(multi_face_jpg), "--weights-dir", str(exported_weights), "--json"], {})
    assert proc.returncode == 0, proc.stderr
    assert '"n_faces": 5' in proc.stdout
    assert "HEAVY:\n" in proc.stdout + "\n", proc.stdout[-300:]


def test_affectlab_analyze_defaults_import_no_torch(
    exported_weights: Path, multi_face_jpg: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    LabelStore(url).upgrade()
    proc = _run(
        "affectlab.cli",
        ["analyze", str(multi_face_jpg), "--study", "s"],
        {"AFFECTLAB_WEIGHTS_DIR": str(exported_weights), "DATABASE_URL": url, "AFFECTLAB_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "5 faces" in proc.stdout
    assert "HEAVY:\n" in proc.stdout + "\n", proc.stdout[-300:]


def test_exact_path_is_torch(exported_weights: Path, single_face_jpg: Path) -> None:
    proc = _run("models.cli", ["analyze", str(single_face_jpg), "--weights-dir", str(exported_weights), "--exact"], {})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY:torch" in proc.stdout


def test_web_app_paints_before_any_model_loads(tmp_path: Path) -> None:
    """The app's first page and the Analyze page render without importing torch (models load on first analysis)."""
    code = (
        "import sys\n"
        "from tests.apphelpers import new_app, page\n"
        "at = new_app()\n"
        "at.run()\n"
        "assert not at.exception, at.exception\n"
        "page(at, 'analyze')\n"
        "assert not at.exception, at.exception\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AFFECTLAB_") and k not in ("DATABASE_URL", "SPACE_ID")
    }
    env.update(
        PYTHONPATH=str(ROOT), AFFECTLAB_DATA_DIR=str(tmp_path / "data"), AFFECTLAB_WEIGHTS_DIR=str(tmp_path / "weights")
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY:\n" in proc.stdout + "\n", proc.stdout[-300:]
