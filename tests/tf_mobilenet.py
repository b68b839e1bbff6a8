"""Runs Keras's own MobileNet v1 in real TensorFlow, for the parity test of ``models.keras_mobilenet`` (test-only).

Run by ``tests/test_keras_mobilenet.py`` with the side environment's interpreter (``.venv-mobile``: tensorflow-cpu,
see ``requirements-mobile.txt``); it imports nothing of AffectLab, and AffectLab never imports TensorFlow.

    python tests/tf_mobilenet.py IN.npz OUT_DIR

``IN.npz``: ``x`` (N, 224, 224, 3) float32 model inputs (BGR, mean subtracted: what the published model takes);
``L<i>_<j>``: the j-th weight of the i-th weighted layer in Keras order; ``h5py_file``: a file written by
``tests/keras_files.py``. It builds ``keras.applications.MobileNet(include_top=False, pooling="avg", weights=None)``
plus ``Dense(K, softmax)``, the architecture of ``mobilenet_7.h5``:

- model A gets the weights with ``set_weights`` and is saved by Keras itself (``model.save(OUT_DIR/tf_written.h5)``,
  Keras's HDF5 format, the published file's);
- model B loads ``h5py_file`` with Keras's own ``load_weights`` (checks that the test files are what Keras reads).

``OUT_DIR/tf_out.npz``: features (the pooled 1024 values), logits (``features @ kernel + bias`` in TensorFlow) and the
model's softmax output, of both.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def build(num_classes: int):  # type: ignore[no-untyped-def]
    import keras

    base = keras.applications.MobileNet(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    out = keras.layers.Dense(num_classes, activation="softmax", name="dense")(base.output)
    return keras.Model(base.input, out)


def run(model, x):  # type: ignore[no-untyped-def]
    import keras
    import tensorflow as tf

    features_model = keras.Model(model.input, model.layers[-2].output)
    features = features_model.predict(x, verbose=0)
    dense = model.layers[-1]
    logits = (tf.matmul(tf.constant(features), dense.kernel) + dense.bias).numpy()
    return features, logits, model.predict(x, verbose=0)


def main(argv: list[str]) -> int:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    src, out_dir = argv
    data = np.load(src)
    x = data["x"]
    weighted = sorted({int(k[1:].split("_")[0]) for k in data.files if k.startswith("L")})
    layers = [[data[f"L{i}_{j}"] for j in range(4) if f"L{i}_{j}" in data.files] for i in weighted]
    num_classes = layers[-1][-1].shape[0]

    model_a = build(num_classes)
    with_weights = [layer for layer in model_a.layers if layer.weights]
    assert len(with_weights) == len(layers), (len(with_weights), len(layers))
    for layer, values in zip(with_weights, layers, strict=True):
        layer.set_weights(values)
    model_a.save(os.path.join(out_dir, "tf_written.h5"))

    model_b = build(num_classes)
    model_b.load_weights(str(data["h5py_file"]))

    fa, la, pa = run(model_a, x)
    fb, lb, pb = run(model_b, x)
    np.savez(
        os.path.join(out_dir, "tf_out.npz"),
        features_a=fa,
        logits_a=la,
        probs_a=pa,
        features_b=fb,
        logits_b=lb,
        probs_b=pb,
        tf_version=np.asarray(tf.__version__),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
