"""Stored weights: paths, fetch (from a local HTTP server), import and the pickle -> safetensors conversion, the one
verification test, and loading without unpickling. The downloader itself: tests/test_download.py."""

from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.settings import Settings
from models import convert, download, registry, weights
from models.backbones import build_model, split_head
from models.errors import (
    BadInputError,
    CheckpointFormatError,
    HashMismatchError,
    WeightsMissingError,
)
from models.registry import REGISTRY, get_spec
from tests.checkpoints import (
    export_published_onnx,
    install_random_weights,
    random_published_module,
    save_published,
)
from tests.fileserver import Server, serving
from tests.fileserver import blob_sha1 as _blob_sha1
from tests.fileserver import trusted_files as _trusted_files

pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")  # emotiefflib's class

B0 = "enet_b0_8_best_vgaf"
MBF = "mbf_va_mtl"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(monkeypatch) as s:
        yield s


@pytest.fixture(scope="module")
def b0_published(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = random_published_module(get_spec(B0), seed=3)
    return module, save_published(module, tmp_path_factory.mktemp("published") / "enet_b0_8_best_vgaf.pt")


@pytest.fixture(scope="module")
def mbf_published(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = random_published_module(get_spec(MBF), seed=4)
    return module, save_published(module, tmp_path_factory.mktemp("published") / "mbf_va_mtl.pt")


def _pin_hash(monkeypatch: pytest.MonkeyPatch, name: str, sha1: str) -> None:
    """Makes the registry expect ``sha1`` for ``name`` (the URL stays the pinned one)."""
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], git_blob_sha1=sha1))


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _rebuilt(name: str, wd: Path) -> nn.Module:
    state, _ = weights.load_weights(name, wd)
    model = build_model(get_spec(name))
    model.load_state_dict(state, strict=True)
    return model


def _input(spec: registry.ModelSpec, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------- hashing, paths


def test_registry_urls_are_pinned() -> None:
    for spec in REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{40}", spec.commit), spec.name
        assert re.fullmatch(r"[0-9a-f]{40}", spec.git_blob_sha1), spec.name
        assert spec.url == f"https://github.com/{spec.repo}/raw/{spec.commit}/{spec.path}"


def test_resolve_weights_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag wins over the configured folder; the configured folder is the settings' (env, else the user cache)."""
    monkeypatch.delenv("AFFECTLAB_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    configured = Settings.from_env().weights_dir
    assert weights.resolve_weights_dir(None, configured) == tmp_path / "cache" / "affectlab" / "weights"
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "env"))
    configured = Settings.from_env().weights_dir
    assert weights.resolve_weights_dir(None, configured) == tmp_path / "env"
    assert weights.resolve_weights_dir("", configured) == tmp_path / "env"
    assert weights.resolve_weights_dir(tmp_path / "flag", configured) == tmp_path / "flag"
    assert weights.resolve_weights_dir(str(tmp_path / "flag"), configured) == tmp_path / "flag"
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "changed"))  # read once at the top: models/ never looks
    assert weights.resolve_weights_dir(None, configured) == tmp_path / "env"


def test_weights_path_layout(tmp_path: Path) -> None:
    assert weights.weights_path(B0, tmp_path) == tmp_path / "enet_b0_8_best_vgaf.safetensors"
    assert weights.weights_path("enet_b0_8_best_vgaf.onnx", tmp_path) == tmp_path / "enet_b0_8_best_vgaf.onnx"
    assert weights.weights_path("engagement_single_attention", tmp_path) == tmp_path / "engagement_single_attention"
    assert not weights.is_present(B0, tmp_path)


# --------------------------------------------------------------------------------------------------- fetch


def test_fetch_converts_to_safetensors(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, b0_published: tuple[nn.Module, Path]
) -> None:
    module, pt = b0_published
    sha = download.git_blob_sha1(pt)
    _pin_hash(monkeypatch, B0, sha)
    assert get_spec(B0).url.startswith("https://github.com/sb-ai-lab/EmotiEffLib/raw/")
    url = server.serve("/enet_b0_8_best_vgaf.pt", pt.read_bytes())
    wd = tmp_path / "w"
    out = weights.fetch(B0, wd, progress=False, url=url)
    assert out == wd / "enet_b0_8_best_vgaf.safetensors" and weights.is_present(B0, wd)
    assert sorted(p.name for p in _trusted_files(wd)) == ["enet_b0_8_best_vgaf.safetensors"]
    meta = weights.read_metadata(B0, wd)
    assert meta["verified"] == "true" and meta["source_sha1"] == sha
    assert meta["arch"] == "tf_efficientnet_b0" and meta["num_outputs"] == "8" and meta["name"] == B0
    x = _input(get_spec(B0))
    assert torch.equal(_forward(_rebuilt(B0, wd), x), _forward(module, x))
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] and row["path"] == str(out) and row["classes"] == 8
    # Verified weights are there: a second fetch downloads nothing.
    weights.fetch(B0, wd, progress=False, url=url)
    assert len(server.requests_for("/enet_b0_8_best_vgaf.pt")) == 1


def test_fetch_hash_mismatch_stores_nothing(
    tmp_path: Path, server: Server, b0_published: tuple[nn.Module, Path]
) -> None:
    _, pt = b0_published
    url = server.serve("/enet_b0_8_best_vgaf.pt", pt.read_bytes())
    wd = tmp_path / "w"
    with pytest.raises(HashMismatchError) as err:
        weights.fetch(B0, wd, progress=False, url=url)
    assert get_spec(B0).git_blob_sha1 in str(err.value) and download.git_blob_sha1(pt) in str(err.value)
    assert not weights.is_present(B0, wd)
    assert _trusted_files(wd) == []


def test_fetch_onnx_and_keras_store_the_file(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wd = tmp_path / "w"
    onnx_bytes = b"stand-in onnx bytes" * 100
    _pin_hash(monkeypatch, "enet_b0_8_best_vgaf.onnx", _blob_sha1(onnx_bytes))
    out = weights.fetch("enet_b0_8_best_vgaf.onnx", wd, progress=False, url=server.serve("/a.onnx", onnx_bytes))
    assert out == wd / "enet_b0_8_best_vgaf.onnx" and out.read_bytes() == onnx_bytes
    h5 = convert.HDF5_SIGNATURE + b"keras" * 100
    _pin_hash(monkeypatch, "engagement_single_attention", _blob_sha1(h5))
    out = weights.fetch("engagement_single_attention", wd, progress=False, url=server.serve("/e.h5", h5))
    assert out == wd / "engagement_single_attention" and out.read_bytes() == h5
    # mobilenet_7 (a Keras emotion model) is converted to safetensors, like the .pt files.
    from models.keras_mobilenet import KerasMobileNetV1
    from tests.keras_files import write_mobilenet_h5

    state = {k: v.numpy() for k, v in KerasMobileNetV1(7).state_dict().items()}
    mobile = write_mobilenet_h5(state, tmp_path / "mobilenet_7.h5").read_bytes()
    _pin_hash(monkeypatch, "mobilenet_7", _blob_sha1(mobile))
    out = weights.fetch("mobilenet_7", wd, progress=False, url=server.serve("/m.h5", mobile))
    assert out == wd / "mobilenet_7.safetensors" and weights.weights_verified("mobilenet_7", wd)
    assert not (wd / "downloads" / "mobilenet_7.h5").exists()
    rows = {r["name"]: r for r in weights.list_models(wd)}
    assert rows["mobilenet_7"]["present"] and rows["mobilenet_7"]["runnable"] is True
    assert rows["enet_b0_8_best_vgaf.onnx"]["present"] and rows["enet_b0_8_best_vgaf.onnx"]["verified"]
    assert not rows[B0]["present"] and rows[B0]["verified"] is None
    with pytest.raises(CheckpointFormatError):
        weights.load_weights("enet_b0_8_best_vgaf.onnx", wd)


def test_fetch_defaults_through_the_mirror(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, b0_published: tuple[nn.Module, Path]
) -> None:
    """`python -m models fetch --defaults`: the emotion and engagement models, from AFFECTLAB_WEIGHTS_MIRROR's host."""
    from urllib.parse import urlsplit

    from models.cli import main
    from models.registry import DEFAULT_APP_MODELS, ENGAGEMENT_MODEL

    h5 = convert.HDF5_SIGNATURE + b"engagement" * 100
    pt = b0_published[1].read_bytes()
    for name, data in ((B0, pt), (ENGAGEMENT_MODEL, h5)):
        _pin_hash(monkeypatch, name, _blob_sha1(data))
        server.serve("/mirror" + urlsplit(get_spec(name).url).path, data)
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_MIRROR", server.url("/mirror/"))
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("AFFECTLAB_MODEL", raising=False)
    assert main(["fetch", "--defaults", "--quiet"]) == 0
    assert all(weights.is_present(n, tmp_path / "w") for n in DEFAULT_APP_MODELS)
    assert weights.read_metadata(B0, tmp_path / "w")["verified"] == "true"
    assert server.requests_for("/mirror" + urlsplit(get_spec(ENGAGEMENT_MODEL).url).path)
    assert main(["fetch"]) == 2, "no name and no --defaults: a setup error"


# --------------------------------------------------------------------------------------------------- import


def test_import_refuses_mismatch_without_flag(tmp_path: Path, b0_published: tuple[nn.Module, Path]) -> None:
    _, pt = b0_published
    wd = tmp_path / "w"
    with pytest.raises(HashMismatchError) as err:
        convert.import_checkpoint(pt, B0, wd)
    msg = str(err.value)
    assert get_spec(B0).git_blob_sha1 in msg and download.git_blob_sha1(pt) in msg and "--trust-unverified" in msg
    assert _trusted_files(wd) == []


def test_import_trust_unverified(
    tmp_path: Path, server: Server, b0_published: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, pt = b0_published
    wd = tmp_path / "w"
    out = convert.import_checkpoint(pt, B0, wd, trust_unverified=True)
    assert out == weights.weights_path(B0, wd)
    meta = weights.read_metadata(B0, wd)
    assert meta["verified"] == "false" and meta["source_sha1"] == download.git_blob_sha1(pt)
    x = _input(get_spec(B0))
    assert torch.equal(_forward(_rebuilt(B0, wd), x), _forward(module, x))
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] is False and "unverified" in row["note"]
    assert sorted(p.name for p in _trusted_files(wd)) == ["enet_b0_8_best_vgaf.safetensors"]
    # fetch replaces unverified weights with verified ones.
    _pin_hash(monkeypatch, B0, download.git_blob_sha1(pt))
    weights.fetch(B0, wd, progress=False, url=server.serve("/b0.pt", pt.read_bytes()))
    assert weights.read_metadata(B0, wd)["verified"] == "true"


def test_import_verified_when_hash_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    module, pt = mbf_published
    _pin_hash(monkeypatch, MBF, download.git_blob_sha1(pt))
    convert.import_checkpoint(pt, MBF, tmp_path)
    assert weights.read_metadata(MBF, tmp_path)["verified"] == "true"
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path), x), _forward(module, x))


def test_import_wrong_architecture(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    with pytest.raises(CheckpointFormatError, match="do not fit"):
        convert.import_checkpoint(pt, B0, tmp_path / "w", trust_unverified=True)
    assert _trusted_files(tmp_path / "w") == []


def test_import_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a pickle")
    # The message names the file, what it is not, and what to do next (the published file, or `fetch`).
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint") as info:
        convert.import_checkpoint(junk, B0, tmp_path / "w", trust_unverified=True)
    msg = str(info.value)
    assert str(junk) in msg and ".import-" not in msg, msg  # the user's file, not the private copy
    assert get_spec(B0).filename in msg and f"python -m models fetch {B0}" in msg, msg
    with pytest.raises(CheckpointFormatError, match="not an HDF5") as info:
        convert.import_checkpoint(junk, "mobilenet_7", tmp_path / "w", trust_unverified=True)
    assert str(junk) in str(info.value) and "python -m models fetch mobilenet_7" in str(info.value)
    assert _trusted_files(tmp_path / "w") == []


def test_import_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        convert.import_checkpoint(tmp_path / "nope.pt", B0, tmp_path)


def test_import_state_dict_file(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    module, _ = mbf_published
    sd = tmp_path / "sd.pt"
    torch.save({"state_dict": module.state_dict()}, sd)
    convert.import_checkpoint(sd, MBF, tmp_path / "w", trust_unverified=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path / "w"), x), _forward(module, x))


def test_cuda_saved_checkpoint_loads_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    """A file saved from a GPU: same bytes as a CPU save except each storage's location tag reads ``cuda:0``.

    ``torch.save`` writes ``location_tag(storage)`` into ``data.pkl``; patching it produces exactly what a CUDA save
    writes, without a GPU. ``torch.load`` without ``map_location`` then fails on a CPU-only machine.
    """
    module, _ = mbf_published
    pt = tmp_path / "cuda_saved.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(module, pt)
    with zipfile.ZipFile(pt) as zf:
        data_pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        raw = zf.read(data_pkl)
    assert b"cuda:0" in raw and b"\x8c\x03cpu" not in raw and b"X\x03\x00\x00\x00cpu" not in raw
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(pt, weights_only=False)
    convert.import_checkpoint(pt, MBF, tmp_path / "w", trust_unverified=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(_rebuilt(MBF, tmp_path / "w"), x), _forward(module, x))


def test_weights_verified_is_the_one_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    """Absent or unreadable: None; imported unverified: False; the registry's file: True (list_models agrees)."""
    _, pt = mbf_published
    wd = tmp_path / "w"
    assert weights.weights_verified(MBF, wd) is None
    convert.import_checkpoint(pt, MBF, wd, trust_unverified=True)
    assert weights.weights_verified(MBF, wd) is False
    _pin_hash(monkeypatch, MBF, download.git_blob_sha1(pt))
    assert weights.weights_verified(MBF, wd) is False, "imported unverified: stays so until imported or fetched again"
    convert.import_checkpoint(pt, MBF, wd)
    assert weights.weights_verified(MBF, wd) is True
    assert next(r for r in weights.list_models(wd) if r["name"] == MBF)["verified"] is True
    weights.weights_path(B0, wd).write_bytes(b"garbage")
    assert weights.weights_verified(B0, wd) is None
    row = next(r for r in weights.list_models(wd) if r["name"] == B0)
    assert row["present"] and row["verified"] is False and "unreadable" in row["note"]


# --------------------------------------------------------------------------------------------------- loading


def test_load_weights_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mbf_published: tuple[nn.Module, Path]
) -> None:
    module, pt = mbf_published
    convert.import_checkpoint(pt, MBF, tmp_path, trust_unverified=True)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling while loading weights")

    class NoUnpickler:
        def __init__(self, *args: object, **kwargs: object) -> None:
            forbidden()

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    state, meta = weights.load_weights(MBF, tmp_path)
    assert meta["name"] == MBF
    model = build_model(get_spec(MBF))
    model.load_state_dict(state, strict=True)
    x = _input(get_spec(MBF))
    assert torch.equal(_forward(model, x), _forward(module, x))


def test_load_weights_missing(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="models fetch enet_b0_8_best_vgaf"):
        weights.load_weights(B0, tmp_path)


def test_load_weights_rejects_another_models_file(tmp_path: Path, mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    convert.import_checkpoint(pt, MBF, tmp_path, trust_unverified=True)
    shutil.copy(weights.weights_path(MBF, tmp_path), weights.weights_path(B0, tmp_path))
    with pytest.raises(CheckpointFormatError, match="mbf_va_mtl"):
        weights.load_weights(B0, tmp_path)


def test_load_weights_damaged_file(tmp_path: Path) -> None:
    weights.weights_path(B0, tmp_path).write_bytes(b"garbage")
    with pytest.raises(CheckpointFormatError, match="fetch"):
        weights.load_weights(B0, tmp_path)


# --------------------------------------------------------------------------------------------------- backbones


TORCH_ARCH_NAMES = [
    B0,
    MBF,
    pytest.param("enet_b2_8", marks=pytest.mark.slow),
    pytest.param("mobilevit_va_mtl", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", TORCH_ARCH_NAMES)
def test_published_roundtrip_and_split_head(name: str, tmp_path: Path) -> None:
    """Published module -> import -> rebuilt model: same outputs; split_head gives the reference's features."""
    spec = get_spec(name)
    module = random_published_module(spec, seed=5)
    x = _input(spec, n=3)
    expected = _forward(module, x)
    convert.import_checkpoint(save_published(module, tmp_path / spec.filename), name, tmp_path, trust_unverified=True)
    model = _rebuilt(name, tmp_path)
    assert (_forward(model, x) - expected).abs().max().item() <= 1e-5
    backbone, head = split_head(model, spec)
    assert isinstance(head, nn.Linear) and head.out_features == spec.num_outputs
    feats = _forward(backbone, x)
    assert feats.shape == (3, spec.feature_dim)
    assert (head(feats) - expected).abs().max().item() <= 1e-5
    assert feats.std(0).max().item() > 1e-3  # random weights still give input-dependent features


def test_build_model_rejects_the_engagement_model() -> None:
    assert build_model(get_spec("mobilenet_7")).classifier.out_features == 7
    with pytest.raises(CheckpointFormatError):
        build_model(get_spec("engagement_single_attention"))


def test_build_model_uses_tf_variants() -> None:
    model = build_model(get_spec(B0))
    assert type(model.conv_stem).__name__ == "Conv2dSame"
    assert model.bn1.eps == pytest.approx(1e-3)


def test_onnx_export_and_install(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    spec = get_spec(MBF)
    paths = install_random_weights([MBF, "mbf_va_mtl.onnx"], tmp_path / "w", seed=9)
    graph = onnx.load(str(paths["mbf_va_mtl.onnx"])).graph
    assert graph.node[-1].op_type == "Gemm"
    assert [i.name for i in graph.input if i.name == "input"] == ["input"]
    stored = weights.weights_path("mbf_va_mtl.onnx", tmp_path / "w")
    assert stored.read_bytes() == paths["mbf_va_mtl.onnx"].read_bytes()
    sess = ort.InferenceSession(str(stored), providers=["CPUExecutionProvider"])
    x = _input(spec, n=3)  # dynamic batch
    onnx_out = sess.run(None, {"input": x.numpy()})[0]
    torch_out = _forward(_rebuilt(MBF, tmp_path / "w"), x).numpy()
    assert np.abs(onnx_out - torch_out).max() <= 1e-4


def test_export_requires_gemm_tail(tmp_path: Path) -> None:
    spec = get_spec(MBF)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 4), nn.ReLU())
    with pytest.raises(AssertionError, match="Gemm"):
        export_published_onnx(module, spec, tmp_path / "x.onnx")


def test_random_modules_are_deterministic(mbf_published: tuple[nn.Module, Path]) -> None:
    module, _ = mbf_published  # seed 4
    a = module.state_dict()
    b = random_published_module(MBF, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all((v > 0).all() for k, v in a.items() if k.endswith("running_var"))
    assert not any(torch.equal(v, torch.ones_like(v)) for k, v in a.items() if k.endswith("running_var"))
    assert not any(torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if k.endswith(("running_mean", "bias")))


def test_published_pickle_names_top_level_mobilefacenet(mbf_published: tuple[nn.Module, Path]) -> None:
    _, pt = mbf_published
    with zipfile.ZipFile(pt) as zf:
        raw = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"mobilefacenet" in raw
    assert b"models.mobilefacenet" not in raw


def test_no_env_reads_outside_settings() -> None:
    src = Path(weights.__file__).read_text()
    assert "os.environ" not in src and "getenv" not in src
