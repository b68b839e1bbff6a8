"""The emotion model's ONNX Runtime session on the CPU: batch fixed to 1, a batch run crop by crop, same numbers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from models.ort_sessions import OneCropSession, batch_dim_name, ort_session


def _model(batch: str | int = "n") -> onnx.ModelProto:
    """A small graph whose shape arithmetic depends on the input (Shape -> Gather -> Reshape), as SAME padding's."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["c", "s"], ["a"]),
        helper.make_node("ReduceMean", ["a"], ["y"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_batch_dim_name() -> None:
    assert batch_dim_name(_model("n")) == "n"
    assert batch_dim_name(_model("batch")) == "batch"
    assert batch_dim_name(_model(1)) is None


def test_one_crop_session_gives_the_dynamic_sessions_numbers() -> None:
    model = _model()
    data = model.SerializeToString()
    session, workers = ort_session(data, "cpu", batch_dim_name(model))
    assert isinstance(session, OneCropSession) and workers >= 1
    dynamic = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    (want,) = dynamic.run(None, {"x": x})
    (got,) = session.run(None, {"x": x})
    assert got.shape == (5, 4)
    assert np.abs(got - want).max() <= 1e-5
    # rows are run alone and come back in order: not a constant output
    assert np.abs(got[0] - got[1]).max() > 1e-3
    (one,) = session.run(None, {"x": x[2:3]})
    assert np.abs(one - want[2:3]).max() <= 1e-5
    (none,) = session.run(None, {"x": x[:0]})
    assert none.shape == (0, 4)


def test_a_fixed_batch_is_left_as_it_is() -> None:
    model = _model(1)
    session, _ = ort_session(model.SerializeToString(), "cpu", batch_dim_name(model))
    assert not isinstance(session, OneCropSession)
