"""The Dataset page through AppTest: counts, confusion, exports (as the download's bytes), deletion."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.apphelpers import analyze_into, fresh_data_dir, new_app, no_exception, page, store_for
from webapp.services import exports, library

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, random_weights_dir: Path, multi_face_jpg: Path) -> Path:
    data = tmp_path_factory.mktemp("dataset-template")
    analyze_into(data, random_weights_dir, [multi_face_jpg])
    store = store_for(data)
    faces = store.recordings.faces("default")
    store.review.correct_face(faces[0].face_id, "alice", label="Happiness", valence=0.7)
    store.review.correct_face(faces[1].face_id, "alice", label="Fear")
    store.review.correct_face(faces[1].face_id, "bob", label="Fear")
    store.close()
    return data


@pytest.fixture
def data_dir(analysed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path) -> Path:
    return fresh_data_dir(analysed, tmp_path, monkeypatch, random_weights_dir)


def _charts(at: AppTest) -> dict[str, str]:
    """The page's SVG charts (images) by title."""
    import base64
    import html
    import re

    out = {}
    for image in at.get("image"):
        for url in image.value:
            head, _, data = url.partition(",")
            if head == "data:image/svg+xml;base64":
                svg = base64.b64decode(data).decode()
                m = re.match(r"<svg[^>]*><title>(.*?)</title>", svg)
                if m:
                    out[html.unescape(m.group(1))] = svg
    return out


def test_counts_confusion_and_export_buttons(data_dir: Path) -> None:
    at = page(new_app(), "dataset")
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Faces"] == "5" and metrics["Corrected faces"] == "2" and metrics["Annotators"] == "2"
    charts = _charts(at)
    assert list(charts) == ["Faces per class", "Confusion: annotators' class vs. model's class"]
    assert not at.get("plotly_chart"), "SVG charts: no plotly.js for the browser to load on every visit"
    for series in ("model", "annotators", "exported label"):
        assert f"<title>{series}, Happiness: " in charts["Faces per class"], "every series, with each bar's count"
    assert "human Happiness, model " in charts["Confusion: annotators' class vs. model's class"]
    labels = [b.label for b in at.get("download_button")]
    assert sorted(labels) == sorted([d for d, _, _ in exports.EXPORT_FORMATS.values()] + ["Dataset card (README.md)"])


def test_exports_hold_the_corrections(data_dir: Path) -> None:
    store = store_for(data_dir)
    df = pd.read_csv(io.BytesIO(exports.export_bytes(store, "default", "csv", owner=True)))
    assert len(df) == 5 and "face_id" in df.columns
    human = df[df["label_source"] == "human"].sort_values("face_id")
    assert list(human["label"]) == ["Happiness", "Fear"]
    assert pd.read_parquet(io.BytesIO(exports.export_bytes(store, "default", "parquet", owner=True))).shape[0] == 5
    npz = np.load(io.BytesIO(exports.export_bytes(store, "default", "features", owner=True)))
    assert npz["X"].shape[1] == 1280
    with zipfile.ZipFile(io.BytesIO(exports.export_bytes(store, "default", "imagefolder", owner=True))) as zf:
        assert any(n.endswith(".png") for n in zf.namelist())
    with zipfile.ZipFile(io.BytesIO(exports.export_bytes(store, "default", "hf", owner=True))) as zf:
        assert any(n.endswith("metadata.csv") for n in zf.namelist())
    assert "Happiness" in exports.dataset_card(store, "default", owner=True)
    assert exports.export_file_name("a b/<c>", "hf") == "affectlab-a-b-c-hf.zip"


def test_owner_deletes_a_media_item_and_its_file(data_dir: Path) -> None:
    store = store_for(data_dir)
    (media,) = store.recordings.media("default")
    kept = library.kept_media_file(data_dir.resolve() / "media", store, "default", media)
    assert kept is not None and kept.is_file()
    at = page(new_app(), "dataset")
    at.checkbox(key="w_delete_confirm").check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    no_exception(at)
    assert store.recordings.media("default") == []
    assert not kept.exists()
    assert any("Deleted media" in s.value for s in at.success)


def _signed_in(monkeypatch: pytest.MonkeyPatch, *, owner: bool) -> object:
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", "study-code")
    monkeypatch.setenv("AFFECTLAB_OWNER_CODE", "owner-code")
    at = new_app()
    at.run()
    at.text_input(key="w_access_code").input("owner-code" if owner else "study-code")
    at.button[0].click().run()
    at.sidebar.text_input(key="w_annotator").input("carol").run()
    return page(at, "dataset")


def test_independent_labelling_hides_others_everywhere_on_the_dataset_page(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db.review import StudySettings

    store = store_for(data_dir)
    store.review.set_study_settings("default", StudySettings(independent=True))
    at = _signed_in(monkeypatch, owner=False)
    no_exception(at)
    text = " ".join(
        [m.value for m in at.markdown] + [c.value for c in at.caption] + [m.label for m in at.metric]
    ) + " ".join(str(df.value.to_dict()) for df in at.dataframe)
    for leak in ("alice", "bob", "kappa", "Annotators", "Corrected faces", "uploaded by"):
        assert leak not in text, leak
    assert list(_charts(at)) == ["Faces per class (the model's)"], "the model's counts only, no confusion"
    assert any("Independent labelling" in i.value for i in at.info)

    owner = _signed_in(monkeypatch, owner=True)
    no_exception(owner)
    metrics = {m.label: m.value for m in owner.metric}
    assert metrics["Fleiss' kappa, annotators (1 face)"] == "-", "no kappa on fewer than 10 faces"
    pairs = next(df.value for df in owner.dataframe if "annotator pair" in df.value.columns)
    assert pairs.to_dict("records") == [
        {
            "annotator pair": "alice | bob",
            "shared faces": 1,
            "Cohen's kappa": None,
            "note": "no kappa: fewer than 10 shared faces",
        }
    ]
    assert any("fewer than 10 faces" in c.value for c in owner.caption)
