"""Checkpoints never run code: a crafted ``.pt`` whose pickle calls ``os.system``, ``subprocess`` or ``eval`` is
refused (with ``--trust-unverified`` too) before anything runs, by the command line and by the web app's service;
the published formats still convert."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from models import convert, unpickle, weights
from models.errors import AffectLabError, CheckpointFormatError, UnsafeCheckpointError
from models.registry import get_spec
from tests.checkpoints import random_published_module, save_published

REPO = Path(__file__).resolve().parent.parent
NAME = "enet_b0_8_best_vgaf"

pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")


class _Shell:
    """Unpickling it runs ``os.system`` (pickled as ``posix.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Popen:
    """Unpickling it starts ``subprocess.Popen``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _Eval:
    """Unpickling it runs ``builtins.eval``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


PAYLOADS: dict[str, tuple[type, str]] = {
    "os.system": (_Shell, "system"),
    "subprocess": (_Popen, "subprocess.Popen"),
    "eval": (_Eval, "builtins.eval"),
}


def _crafted(kind: str, tmp_path: Path, *, inside_model: bool) -> tuple[Path, Path, str]:
    """A ``torch.save`` file carrying the payload, alone in a state dict or hidden in a published-format model."""
    cls, global_name = PAYLOADS[kind]
    marker = tmp_path / f"pwned-{kind}"
    payload = cls(marker)
    if inside_model:
        module = random_published_module(get_spec(NAME), seed=3)
        module.__dict__["extra"] = payload  # an attribute the real class never has
        obj: Any = module
    else:
        obj = {"state_dict": {"w": torch.zeros(2)}, "meta": payload}
    path = tmp_path / f"evil-{kind}.pt"
    torch.save(obj, path)
    assert not marker.exists()
    return path, marker, global_name


@pytest.mark.parametrize("inside_model", [False, True], ids=["state-dict", "model"])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_import_checkpoint_refuses_code(kind: str, inside_model: bool, tmp_path: Path) -> None:
    path, marker, global_name = _crafted(kind, tmp_path, inside_model=inside_model)
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")) as info:
        convert.import_checkpoint(path, NAME, tmp_path / "w", trust_unverified=True)
    assert isinstance(info.value, CheckpointFormatError)  # callers catching the old error still catch it
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert not weights.is_present(NAME, tmp_path / "w")


def test_cli_import_checkpoint_refuses_code(tmp_path: Path) -> None:
    path, marker, global_name = _crafted("os.system", tmp_path, inside_model=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "import-checkpoint",
            str(path),
            "--name",
            NAME,
            "--weights-dir",
            str(tmp_path / "w"),
            "--trust-unverified",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert global_name in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert not marker.exists()
    assert not weights.is_present(NAME, tmp_path / "w")


def test_cli_help_says_trust_unverified_never_runs_code() -> None:
    from models.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None))
    helptext = " ".join(sub.choices["import-checkpoint"].format_help().split())
    assert "skip the hash check only" in helptext and "never runs code" in helptext


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_webapp_import_weights_refuses_code(kind: str, tmp_path: Path) -> None:
    from webapp.services.weights import import_weights

    path, marker, global_name = _crafted(kind, tmp_path, inside_model=False)
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")):
        import_weights(path.read_bytes(), "evil.pt", NAME, tmp_path / "w", trust_unverified=True, owner=True)
    assert not marker.exists()
    assert not weights.is_present(NAME, tmp_path / "w")


@pytest.mark.parametrize("name", ["enet_b0_8_best_vgaf", "mbf_va_mtl", "mobilevit_va_mtl"])
def test_published_formats_still_convert(name: str, tmp_path: Path) -> None:
    spec = get_spec(name)
    src = save_published(random_published_module(spec, seed=5), tmp_path / f"{name}.pt")
    convert.import_checkpoint(src, name, tmp_path / "w", trust_unverified=True)
    state, meta = weights.load_weights(name, tmp_path / "w")
    assert state and meta["verified"] == "false"


def test_state_dict_checkpoint_still_converts(tmp_path: Path) -> None:
    spec = get_spec(NAME)
    module = random_published_module(spec, seed=6)
    src = tmp_path / "sd.pt"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, src)
    convert.import_checkpoint(src, NAME, tmp_path / "w", trust_unverified=True)
    assert weights.is_present(NAME, tmp_path / "w")


class _ScriptedWriter(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (run by ``torch.jit.load``) writes into the file ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        written = torch.from_file(self.path, True, 8, dtype=torch.uint8).fill_(33)
        self.training = state[1] and bool(written.sum() > 0)  # used, so that TorchScript keeps the write


def _torchscript(tmp_path: Path) -> tuple[Path, Path]:
    """A TorchScript archive and the 8-byte file its loading would overwrite with ``!`` (checked to happen)."""
    path, marker = tmp_path / "scripted.pt", tmp_path / "written-by-torchscript"
    with pytest.warns(FutureWarning):
        torch.jit.script(_ScriptedWriter(str(marker))).save(str(path))
    marker.write_bytes(b"\0" * 8)
    with pytest.warns(FutureWarning):  # the probe is live: torch.jit.load runs the file's code
        torch.jit.load(str(path))
    assert marker.read_bytes() == b"!" * 8
    marker.write_bytes(b"\0" * 8)
    return path, marker


def test_torchscript_is_refused_by_the_cli_and_the_web_import(tmp_path: Path) -> None:
    from webapp.services.weights import import_weights

    path, marker = _torchscript(tmp_path)
    assert path.read_bytes().startswith(b"PK"), "a zip, like torch.save's own format"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "models", "import-checkpoint", str(path), "--name", NAME, "--weights-dir"),
            *(str(tmp_path / "w"), "--trust-unverified"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "TorchScript" in proc.stderr and str(path) in proc.stderr, proc.stderr
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        import_weights(path.read_bytes(), "scripted.pt", NAME, tmp_path / "w", trust_unverified=True, owner=True)
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        convert.import_checkpoint(path, NAME, tmp_path / "w", trust_unverified=True)
    assert marker.read_bytes() == b"\0" * 8, "the archive's code ran"
    assert not weights.is_present(NAME, tmp_path / "w")


def test_only_checkpoint_containers_are_read(tmp_path: Path) -> None:
    import tarfile
    import zipfile

    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    tar = tmp_path / "old.pt"
    with tarfile.open(tar, "w") as tf:
        tf.add(other_zip, arcname="storages")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for bad, reason in ((other_zip, "data.pkl"), (tar, "tar archive"), (text, "not a PyTorch checkpoint")):
        with pytest.raises(CheckpointFormatError, match=reason) as info:
            convert.import_checkpoint(bad, NAME, tmp_path / "w", trust_unverified=True)
        assert str(bad) in str(info.value)
    legacy = tmp_path / "legacy.pt"
    module = random_published_module(get_spec(NAME), seed=7)
    torch.save(module.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert unpickle.checkpoint_container(legacy) == "legacy"
    convert.import_checkpoint(legacy, NAME, tmp_path / "w", trust_unverified=True)
    assert weights.is_present(NAME, tmp_path / "w")


UNPICKLING_CALLS = {"torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load", "joblib.load"}
"""Calls that unpickle (or run TorchScript) what they read."""
MAY_UNPICKLE = {
    "models/unpickle.py": "the one unpickling, through the allowlist",
    "models/export.py": "loads back the TorchScript file it has just written, to compare it with the model",
}


def _unpickling_calls(root: Path) -> list[str]:
    import ast

    out = []
    for package in ("core", "models", "db", "affectlab", "webapp"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    pickled = any(
                        k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in node.keywords
                    )
                    if name in UNPICKLING_CALLS or pickled:
                        out.append(f"{path.relative_to(root).as_posix()}: {name}")
    return out


def test_nothing_unpickles_outside_the_one_loader() -> None:
    root = Path(__file__).resolve().parents[1]
    found = _unpickling_calls(root)
    assert found and {f.split(":")[0] for f in found} <= set(MAY_UNPICKLE), found


def test_the_unpickling_scan_sees_a_call(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    code = "import pickle, numpy as np\npickle.loads(b'')\nnp.load('a', allow_pickle=True)\n"
    code += "np.save('b', 1, allow_pickle=False)\n"
    (tmp_path / "db" / "x.py").write_text(code)
    assert _unpickling_calls(tmp_path) == ["db/x.py: pickle.loads", "db/x.py: np.load"]


def test_webapp_import_weights_names_the_upload_not_a_server_path(tmp_path: Path) -> None:
    """A refused upload's message names the file the owner chose, never the server's temporary copy of it."""
    from webapp.services.weights import import_weights

    for data, trust in ((b"\x80\x04not a pickle", True), (b"some other file", False)):
        with pytest.raises(AffectLabError) as err:
            import_weights(data, "my model.pt", NAME, tmp_path / "w", trust_unverified=trust, owner=True)
        assert str(err.value).startswith("my model.pt: "), str(err.value)
        assert str(tmp_path) not in str(err.value) and ".upload-" not in str(err.value)
    assert not weights.is_present(NAME, tmp_path / "w")
