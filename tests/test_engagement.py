"""Engagement: Keras HDF5 reading (files written here in Keras's exact layouts), parity with the reference graph."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.engagement import (
    EngagementConfig,
    EngagementLabel,
    EngagementModel,
    EngagementNet,
    engagement_label,
    window_starts,
)
from models.errors import CheckpointFormatError
from models.keras_h5 import read_attribute_list, read_keras_weights

# Layers of EmotiEffLib's _single_attention_model, in model order (Keras's layer_names).
LAYERS = ["image_set", "e", "alignment", "alpha", "repeat", "alpha_repeated", "c", "context", "hidden_FC", "dense"]
SHAPES = {"e": ((2560, 1), (1,)), "hidden_FC": ((2560, 512), (512,)), "dense": ((512, 2), (2,))}


def random_keras_weights(seed: int = 0, scale: float = 0.05) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.normal(0, scale, k).astype(np.float32), rng.normal(0, scale, b).astype(np.float32))
        for name, (k, b) in SHAPES.items()
    }


def _save_attr(group: h5py.Group, name: str, values: list[bytes], chunks: int = 1) -> None:
    """Keras's save_attributes_to_hdf5_group; ``chunks`` > 1 imitates its split of oversized attributes."""
    arr = np.asarray(values)
    if chunks == 1:
        group.attrs[name] = arr
        return
    for i, part in enumerate(np.array_split(arr, chunks)):
        group.attrs[f"{name}{i}"] = part


def write_keras_h5(
    path: Path,
    weights: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    whole_model: bool = False,
    keras3: bool = False,
    chunked: bool = False,
    dense_name: str = "dense",
) -> Path:
    """A Keras HDF5 file laid out exactly as tf.keras 2 writes it (``save_weights`` or ``model.save``).

    Keras 2: weight names ``<layer>/kernel:0`` (the ``/`` nests groups); Keras 3's legacy h5 writer: ``kernel``,
    ``bias``. Layers without weights get an empty ``weight_names``.
    """
    names = [dense_name if n == "dense" else n for n in LAYERS]
    with h5py.File(path, "w") as f:
        if whole_model:
            f.attrs["keras_version"] = b"2.15.0"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "model"}}).encode()
            root = f.create_group("model_weights")
        else:
            root = f
        _save_attr(root, "layer_names", [n.encode("utf8") for n in names], chunks=3 if chunked else 1)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.15.0"
        for lname, key in zip(names, LAYERS, strict=True):
            g = root.create_group(lname)
            if key not in weights:
                g.attrs["weight_names"] = np.asarray([])  # what Keras writes for a layer without weights
                continue
            kernel, bias = weights[key]
            wnames = ["kernel", "bias"] if keras3 else [f"{lname}/kernel:0", f"{lname}/bias:0"]
            _save_attr(g, "weight_names", [w.encode("utf8") for w in wnames])
            for wname, val in zip(wnames, (kernel, bias), strict=True):
                g.create_dataset(wname, val.shape, dtype=val.dtype)[...] = val
        if whole_model:
            f.create_group("optimizer_weights")
    return path


def reference_engagement(features: np.ndarray, weights: dict, window: int = 128) -> np.ndarray:
    """EmotiEffLib's classify_engagement windowing (its own loop, off-by-one included) + the Keras graph, in NumPy."""
    features_slices = []
    for i in range(features.shape[0] - window):  # the reference: max_iters = N - W
        x = features[i : i + window]
        mean_x = np.repeat(np.std(x, axis=0).reshape((1, -1)), len(x), axis=0)
        features_slices.append(np.concatenate((mean_x, x), axis=1))
    return keras_graph(np.array(features_slices), weights)


def keras_graph(inputs: np.ndarray, weights: dict) -> np.ndarray:
    """The single-attention model's graph, layer by layer, in float64."""
    x = inputs.astype(np.float64)
    ke, be = (w.astype(np.float64) for w in weights["e"])
    kh, bh = (w.astype(np.float64) for w in weights["hidden_FC"])
    kd, bd = (w.astype(np.float64) for w in weights["dense"])
    e = x @ ke + be  # Dense(1): (B, T, 1)
    e = e.reshape(e.shape[0], -1)  # Reshape([samples])
    alpha = np.exp(e - e.max(1, keepdims=True))
    alpha /= alpha.sum(1, keepdims=True)  # Activation softmax
    alpha_repeated = np.repeat(alpha[:, None, :], x.shape[-1], axis=1).transpose(0, 2, 1)  # RepeatVector + Permute
    context = (x * alpha_repeated).sum(axis=1)  # Multiply + Lambda sum
    h = np.maximum(context @ kh + bh, 0)  # hidden_FC relu
    z = h @ kd + bd
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)  # dense softmax


@pytest.fixture(scope="module")
def weights() -> dict:
    return random_keras_weights(0)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(1)
    # Non-negative, smooth-ish like pooled EfficientNet features.
    base = np.abs(rng.normal(0.3, 0.4, (1, 1280)))
    return (base + np.abs(rng.normal(0, 0.3, (150, 1280)))).astype(np.float32)


@pytest.mark.parametrize("layout", ["save_weights", "whole_model", "keras3", "chunked", "dense_1"])
def test_reader_reads_keras_layouts(tmp_path, weights, layout):
    path = write_keras_h5(
        tmp_path / "w.h5",
        weights,
        whole_model=layout == "whole_model",
        keras3=layout == "keras3",
        chunked=layout == "chunked",
        dense_name="dense_1" if layout == "dense_1" else "dense",
    )
    layers = read_keras_weights(path)
    assert [layer.name for layer in layers] == ["e", "hidden_FC", "dense_1" if layout == "dense_1" else "dense"]
    for layer, key in zip(layers, ["e", "hidden_FC", "dense"], strict=True):
        np.testing.assert_array_equal(layer.get("kernel"), weights[key][0])
        np.testing.assert_array_equal(layer.get("bias"), weights[key][1])
    model = EngagementModel.from_h5(path)
    np.testing.assert_array_equal(model.net.hidden_fc.weight.numpy(), weights["hidden_FC"][0].T)
    assert sum(p.numel() for p in model.net.parameters()) == 1_314_819


def test_chunked_attribute_order(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        _save_attr(f, "layer_names", [b"a", b"b", b"c", b"d", b"e"], chunks=2)
        assert read_attribute_list(f, "layer_names") == ["a", "b", "c", "d", "e"]
        assert read_attribute_list(f, "missing") == []


def test_reader_rejects_bad_files(tmp_path, weights):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(CheckpointFormatError):
        read_keras_weights(tmp_path / "x.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(CheckpointFormatError, match="layer_names"):
        read_keras_weights(tmp_path / "empty.h5")
    bad = dict(weights)
    bad["hidden_FC"] = (np.zeros((1280, 512), np.float32), np.zeros(512, np.float32))
    with pytest.raises(CheckpointFormatError, match="hidden_FC"):
        EngagementModel.from_h5(write_keras_h5(tmp_path / "bad.h5", bad))


def test_parity_with_reference_graph(tmp_path, weights, features):
    model = EngagementModel.from_h5(write_keras_h5(tmp_path / "w.h5", weights))
    result = model.score_sequence(features, times=np.arange(len(features)) / 5.0)
    ref = reference_engagement(features, weights)
    n, w = len(features), 128
    assert len(ref) == n - w  # the reference drops the last window...
    assert len(result.windows) == n - w + 1  # ...AffectLab scores it
    ours = np.array([win.p_engaged for win in result.windows])
    np.testing.assert_allclose(ours[:-1], ref[:, 1], atol=1e-5, rtol=0)
    last = np.std(features[n - w :], axis=0)
    last_ref = keras_graph(np.concatenate((np.broadcast_to(last, (w, 1280)), features[n - w :]), axis=1)[None], weights)
    assert abs(ours[-1] - last_ref[0, 1]) < 1e-5
    assert result.score == pytest.approx(ours.mean())
    assert result.label == ("Engaged" if ours.mean() > 0.5 else "Distracted")
    assert result.windows[0].start_s == 0.0 and result.windows[0].end_s == pytest.approx(127 / 5.0)
    assert result.windows[-1].end_s == pytest.approx((n - 1) / 5.0)
    # The torch module on a batch equals the graph too.
    rows = ref_rows = np.stack(
        [
            np.concatenate((np.broadcast_to(np.std(features[s : s + w], 0), (w, 1280)), features[s : s + w]), 1)
            for s in (0, 7)
        ]
    )
    np.testing.assert_allclose(model.predict_windows(rows), keras_graph(ref_rows, weights), atol=1e-5)


def test_windows_stride_short_and_too_short(weights):
    net = EngagementNet()
    model = EngagementModel(net, EngagementConfig(window=128, stride=10, min_features=16, chunk=4))
    model.net.load_keras(_layers(weights))
    assert window_starts(150, 128, 10) == [0, 10, 20, 22]
    assert window_starts(128, 128, 1) == [0]
    feats = np.random.default_rng(2).random((150, 1280), dtype=np.float32)
    r = model.score_sequence(feats)
    assert [w.start for w in r.windows] == [0, 10, 20, 22] and r.windows[-1].end == 150
    short = model.score_sequence(feats[:40])
    assert len(short.windows) == 1 and short.window == 40
    ref = keras_graph(
        np.concatenate((np.broadcast_to(np.std(feats[:40], 0), (40, 1280)), feats[:40]), 1)[None], weights
    )
    assert abs(short.score - ref[0, 1]) < 1e-5
    assert model.score_sequence(feats[:15]) is None
    assert model.score_sequence(np.zeros((200, 1408), np.float32)) is None  # not enet_b0 features


def test_bounded_memory_chunking(weights):
    """Scoring 1000 rows never builds more than ``chunk`` windows at once."""
    model = EngagementModel(EngagementNet(), EngagementConfig(chunk=8))
    model.net.load_keras(_layers(weights))
    seen = []
    orig = model.predict_windows

    def spy(rows):
        seen.append(rows.shape)
        return orig(rows)

    model.predict_windows = spy
    r = model.score_sequence(np.random.default_rng(3).random((300, 1280), dtype=np.float32))
    assert len(r.windows) == 300 - 128 + 1
    assert max(s[0] for s in seen) <= 8 and all(s[1:] == (128, 2560) for s in seen)


def _layers(weights):
    from models.keras_h5 import KerasLayerWeights

    return [
        KerasLayerWeights(name=k, weight_names=(f"{k}/kernel:0", f"{k}/bias:0"), values=weights[k])
        for k in ("e", "hidden_FC", "dense")
    ]


def test_load_absent_returns_none(tmp_path):
    assert EngagementModel.load(tmp_path) is None


def test_numpy_net_equals_the_graph_and_the_torch_module(tmp_path, weights, features):
    """The torch-free path (``numpy=True``, used by the default CPU analysis) scores as the torch module does."""
    path = write_keras_h5(tmp_path / "w.h5", weights)
    np_model = EngagementModel.from_h5(path, numpy=True)
    torch_model = EngagementModel.from_h5(path)
    rows = np.stack(
        [
            np.concatenate((np.broadcast_to(np.std(features[s : s + 128], 0), (128, 1280)), features[s : s + 128]), 1)
            for s in (0, 9)
        ]
    )
    np.testing.assert_allclose(np_model.predict_windows(rows), keras_graph(rows, weights), atol=1e-5)
    a = np_model.score_sequence(features)
    b = torch_model.score_sequence(features)
    assert abs(a.score - b.score) < 1e-5 and len(a.windows) == len(b.windows)
    with pytest.raises(CheckpointFormatError):
        bad = dict(weights)
        bad["hidden_FC"] = (weights["hidden_FC"][0][:, :10], weights["hidden_FC"][1][:10])
        EngagementModel.from_h5(write_keras_h5(tmp_path / "bad.h5", bad), numpy=True)


def test_engagement_labels_are_the_registry_classes_in_output_order():
    from models.registry import ENGAGEMENT_CLASSES

    assert typing.get_args(EngagementLabel) == ENGAGEMENT_CLASSES
    assert engagement_label(0.51) == "Engaged"
    assert engagement_label(0.5) == "Distracted"
    assert engagement_label(0.7, threshold=0.8) == "Distracted"
