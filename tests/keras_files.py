"""Keras MobileNet v1 ``.h5`` files for tests, written with h5py in the exact layout tf.keras 2 writes (no TensorFlow).

``write_mobilenet_h5`` turns a :class:`models.keras_mobilenet.KerasMobileNetV1` state dict back into Keras's weights
(NHWC kernels, ``gamma``/``beta``/``moving_mean``/``moving_variance``) under Keras's layer names, with the layers that
hold no weights listed too, as ``model.save("m.h5")`` does. ``tests/test_keras_mobilenet.py`` checks with real
TensorFlow that Keras reads these files back (``load_weights``) to the same network.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from models.keras_mobilenet import BLOCKS


def keras_layers(state: dict[str, np.ndarray]) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """``(layer name, [(weight name, value)])`` of every Keras layer in model order (empty list: no weights)."""

    def bn(prefix: str) -> list[tuple[str, np.ndarray]]:
        return [
            ("gamma", state[f"{prefix}.bn.weight"]),
            ("beta", state[f"{prefix}.bn.bias"]),
            ("moving_mean", state[f"{prefix}.bn.running_mean"]),
            ("moving_variance", state[f"{prefix}.bn.running_var"]),
        ]

    out: list[tuple[str, list[tuple[str, np.ndarray]]]] = [("input_1", [])]
    out.append(("conv1", [("kernel", state["conv1.conv.weight"].transpose(2, 3, 1, 0))]))
    out += [("conv1_bn", bn("conv1")), ("conv1_relu", [])]
    for i, (_, stride) in enumerate(BLOCKS):
        n = i + 1
        dw, pw = f"blocks.{i}.0", f"blocks.{i}.1"
        if stride == 2:
            out.append((f"conv_pad_{n}", []))
        out.append((f"conv_dw_{n}", [("depthwise_kernel", state[f"{dw}.conv.weight"].transpose(2, 3, 0, 1))]))
        out += [(f"conv_dw_{n}_bn", bn(dw)), (f"conv_dw_{n}_relu", [])]
        out.append((f"conv_pw_{n}", [("kernel", state[f"{pw}.conv.weight"].transpose(2, 3, 1, 0))]))
        out += [(f"conv_pw_{n}_bn", bn(pw)), (f"conv_pw_{n}_relu", [])]
    out.append(("global_average_pooling2d", []))
    out.append(("dense", [("kernel", state["classifier.weight"].T), ("bias", state["classifier.bias"])]))
    return out


def write_mobilenet_h5(
    state: dict[str, np.ndarray], path: str | Path, *, whole_model: bool = True, keras3: bool = False
) -> Path:
    """Writes a Keras MobileNet v1 ``.h5`` (``model.save`` layout when ``whole_model``, else ``save_weights``).

    Keras 2 names weights ``<layer>/<weight>:0`` (the ``/`` nests a group); Keras 3's legacy writer just ``<weight>``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = keras_layers({k: np.asarray(v, dtype=np.float32) for k, v in state.items()})
    with h5py.File(path, "w") as f:
        if whole_model:
            f.attrs["keras_version"] = b"2.4.0"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "model"}}).encode()
            root = f.create_group("model_weights")
        else:
            root = f
        root.attrs["layer_names"] = np.asarray([name.encode() for name, _ in layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.4.0"
        for lname, weights in layers:
            g = root.create_group(lname)
            wnames = [w if keras3 else f"{lname}/{w}:0" for w, _ in weights]
            g.attrs["weight_names"] = np.asarray([w.encode() for w in wnames])
            for wname, (_, value) in zip(wnames, weights, strict=True):
                g.create_dataset(wname, data=np.ascontiguousarray(value, dtype=np.float32))
        if whole_model:
            f.create_group("optimizer_weights")
    return path
