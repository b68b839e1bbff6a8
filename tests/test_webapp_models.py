"""The Models page through AppTest: the registry table, active model, import (hash-checked), fetch errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.errors import DownloadError
from tests.apphelpers import new_app, no_exception, page, use_folders

pytestmark = pytest.mark.slow


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path) -> Path:
    wd = tmp_path / "weights"
    shutil.copytree(random_weights_dir, wd)
    use_folders(monkeypatch, tmp_path / "data", wd)
    return wd


def test_table_and_active_model(weights: Path) -> None:
    at = page(new_app(), "model_weights")
    no_exception(at)
    df = at.dataframe[0].value
    present = set(df[df["present"]]["model"])
    assert present == {"enet_b0_8_best_vgaf", "enet_b0_8_va_mtl"}
    assert not df[df["model"] == "enet_b0_8_best_vgaf"]["verified"].iloc[0], "random weights are unverified"
    uses = next(c.value for c in at.caption if c.value.startswith("The app uses"))
    assert "`enet_b0_8_best_vgaf`, `engagement_single_attention`" in uses
    assert "missing `engagement_single_attention`" in uses and "fetch --defaults" in uses
    at.selectbox(key="w_active_model").set_value("enet_b0_8_va_mtl").run()
    page(at, "analyze")
    assert at.selectbox(key="w_analyze_model").value == "enet_b0_8_va_mtl"


def test_import_is_hash_checked(weights: Path) -> None:
    published = (weights / "published" / "enet_b0_8_best_vgaf.pt").read_bytes()
    at = page(new_app(), "model_weights")
    at.file_uploader(key="w_import_file").set_value(("mine.pt", published, "application/octet-stream"))
    at.selectbox(key="w_import_name").set_value("enet_b0_8_best_afew")
    at.run()
    next(b for b in at.button if b.label == "Import").click().run()
    no_exception(at)
    assert "is not the published enet_b0_8_best_afew" in at.error[0].value
    assert not (weights / "enet_b0_8_best_afew.safetensors").exists(), "nothing stored"

    at.checkbox(key="w_import_trust").check().run()
    assert any("unpickled" in w.value for w in at.warning), "the risk is explained"
    next(b for b in at.button if b.label == "Import").click().run()
    no_exception(at)
    assert (weights / "enet_b0_8_best_afew.safetensors").is_file()
    assert any("Imported enet_b0_8_best_afew" in s.value for s in at.success)


def test_fetch_failure_is_reported(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.weights

    def offline(name: str, *a: object, **k: object) -> Path:
        raise DownloadError(f"https://github.com/...: no network (test) for {name}")

    monkeypatch.setattr(models.weights, "fetch", offline)
    at = page(new_app(), "model_weights")
    next(b for b in at.button if b.label == "Fetch").click().run()
    no_exception(at)
    assert any("no network (test)" in e.value for e in at.error)


def test_finetune_refuses_with_too_few_corrections(weights: Path, tmp_path: Path, multi_face_jpg: Path) -> None:
    from tests.apphelpers import analyze_into

    analyze_into(tmp_path / "data", weights, [multi_face_jpg])  # 5 faces, none corrected
    at = page(new_app(), "model_weights")
    next(b for b in at.button if b.label == "Fine-tune").click().run()
    no_exception(at)
    texts = [w.value for w in at.warning] + [e.value for e in at.error]
    assert any("at least 20 faces" in t and "Nothing was saved" in t for t in texts), texts
    assert not (weights / "finetuned").exists() or not any((weights / "finetuned").iterdir())


def test_versions_are_listed_selectable_and_removable(weights: Path) -> None:
    import numpy as np

    from models.versions import head_tensors, save_version

    rng = np.random.default_rng(0)
    v = save_version(
        "enet_b0_8_best_vgaf@pilot-emotion-20261128000000",
        "enet_b0_8_best_vgaf",
        "0" * 40,
        "head",
        "emotion",
        head_tensors(rng.standard_normal((8, 1280)), rng.standard_normal(8)),
        "f" * 64,
        {"n_faces": 30, "message": "test version"},
        "2026-11-28T00:00:00",
        weights,
    )
    at = page(new_app(), "model_weights")
    no_exception(at)
    versions = at.dataframe[1].value
    assert list(versions["version"]) == [v.name]
    assert v.name in at.selectbox(key="w_active_model").options
    next(b for b in at.button if b.label == "Remove this version").click().run()
    no_exception(at)
    assert not v.path.exists()


def test_a_new_fine_tuned_version_is_listed_without_leaving_the_page(weights: Path, tmp_path: Path) -> None:
    from tests.apphelpers import opened_store
    from tests.test_finetune import clustered_study

    with opened_store(tmp_path / "data") as store:
        clustered_study(store, weights, study="default")
    at = page(new_app(), "model_weights")
    assert not any(df.value is not None and "version" in df.value for df in at.dataframe[1:])
    next(b for b in at.button if b.label == "Fine-tune").click().run()
    no_exception(at)
    saved = next(s.value for s in at.success if s.value.startswith("Saved as "))
    name = saved.split("Saved as ", 1)[1].split(":", 1)[0]
    # the same run lists it and offers it as the active model: no reload, no second click
    assert name in list(at.dataframe[1].value["version"])
    assert name in at.selectbox(key="w_active_model").options


def test_phone_export_int8_onnx_is_offered_with_its_agreement(weights: Path) -> None:
    at = page(new_app(), "model_weights")
    at.selectbox(key="w_phone_model").set_value("enet_b0_8_best_vgaf")
    at.radio(key="w_phone_format").set_value("onnx")
    at.checkbox(key="w_phone_int8").check().run()
    assert "--int8" in " ".join(c.value for c in at.caption)
    next(b for b in at.button if b.label == "Export").click().run(timeout=600)
    no_exception(at)
    assert not at.error, at.error[0].value
    text = " ".join(c.value for c in at.caption)
    assert "int8 vs fp32" in text and "top-class agreement" in text and "not the same model" in text
    assert "built-in sample face" in text  # this study has no stored crops: said so
    buttons = at.get("download_button")
    assert len(buttons) == 1 and "enet_b0_8_best_vgaf-int8.onnx" in str(buttons[0].proto.label)


def test_phone_export_without_the_converter_says_how_to_install_it(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFFECTLAB_MOBILE_PYTHON", str(tmp_path / "nowhere" / "python"))
    at = page(new_app(), "model_weights")
    at.radio(key="w_phone_format").set_value("litert").run()
    next(b for b in at.button if b.label == "Export").click().run(timeout=120)
    no_exception(at)
    assert "pip install -r requirements-mobile.txt" in at.error[0].value
    assert not at.get("download_button")


def test_phone_export_whose_check_fails_is_an_error_and_offers_nothing(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted file disagrees with PyTorch: st.error gives the difference; no download, nothing kept."""
    from tests.test_mobile_export import fake_converter

    seen = fake_converter(monkeypatch, 0.25)
    at = page(new_app(), "model_weights")
    at.radio(key="w_phone_format").set_value("litert").run()
    next(b for b in at.button if b.label == "Export").click().run(timeout=120)
    no_exception(at)
    assert len(seen) == 1 and "the litert file disagrees" in at.error[0].value and "not kept" in at.error[0].value
    assert "0.25" in at.error[0].value and not at.get("download_button")
    assert not Path(seen[0]["out"]).parent.exists()  # the server keeps nothing


def test_only_a_global_owner_manages_the_models(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner of one study (its own owners' code) sees the models but cannot fetch, import, fine-tune or remove
    them, nor learn the server's weights folder; the global owners' code can."""
    monkeypatch.setenv("AFFECTLAB_STUDY_OWNER_CODES", "default=study-own")
    monkeypatch.setenv("AFFECTLAB_OWNER_CODE", "global-own")
    at = new_app()
    at.run()
    at.text_input(key="w_access_code").input("study-own")
    at.button(key="w_access_enter").click().run()
    page(at, "model_weights")
    no_exception(at)
    assert not at.get("file_uploader") and not [b for b in at.button if b.label in ("Import", "Fetch")]
    assert any("global owners" in i.value for i in at.info)
    assert not any(str(weights) in c.value for c in at.caption), "the server's folder is not shown"
    at.text_input(key="w_owner_code").input("global-own")
    at.button(key="w_owner_code_enter").click().run()
    page(at, "model_weights")
    no_exception(at)
    assert at.get("file_uploader") and [b for b in at.button if b.label == "Import"]
    assert any(str(weights) in c.value for c in at.caption)
