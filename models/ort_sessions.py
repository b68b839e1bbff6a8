"""ONNX Runtime sessions for the emotion models: single-threaded on the CPU, specialised to one crop per run.

On the CPU each run is single-threaded and the recognizer runs one chunk per core side by side: EfficientNet's small
convolutions parallelise poorly inside ORT (2 intra-op threads: 16 ms per face vs 18 ms single-threaded here), while
two single-threaded runs at once give 11.5 ms per face. Single-threaded runs also leave no idle ORT threads spinning
and taking the cores from the face detector meanwhile.

One crop per run: batching crops does not make a face cheaper on the CPU (ORT single-threaded per face by batch
1: 16.4 ms, 8: 17.5, 32: 19.6), while a session whose batch dimension is fixed to 1 lets ORT fold the shape
arithmetic of the exported graph into constants. tf_efficientnet's "SAME" padding is computed from the input's shape
at run time (Shape, Gather, Ceil, Clip, Pad: 5 Pad nodes and ~150 scalar nodes in enet_b0); with a static shape it
becomes constant pads fused into their convolutions. Measured on enet_b0 (CPU time of the run's thread, medians of
6 x 4 runs alternating, 2 shared cores under load): 17.5 ms per face dynamic, 14.7 ms fixed to 1; features equal
within 5e-5 (features up to ~34: float sums in another order). :class:`OneCropSession` runs a batch crop by crop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.runtime import OnnxSession, cpu_workers


class OneCropSession:
    """An ONNX Runtime session whose batch dimension is fixed to 1, run once per crop of a batch."""

    def __init__(self, session: Any) -> None:
        """Wraps ``session`` (an ``onnxruntime.InferenceSession`` with its batch dimension overridden to 1)."""
        self._session = session

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs of each row of the (single) input run alone, concatenated in order."""
        ((name, x),) = input_feed.items()
        if len(x) == 1:
            out: list[np.ndarray] = self._session.run(output_names, {name: x})
            return out
        rows = [self._session.run(output_names, {name: x[i : i + 1]}) for i in range(len(x))]
        if not rows:
            shapes = [o.shape for o in self._session.get_outputs()]
            return [np.zeros((0, *s[1:]), np.float32) for s in shapes]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]


def batch_dim_name(model: Any) -> str | None:
    """The symbolic name of an ``onnx.ModelProto``'s first input's batch dimension, or None (a fixed batch)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not dims:
        return None
    name: str = dims[0].dim_param
    return name or None


EXPORT_BATCH_DIM = "n"
"""The batch dimension's name in AffectLab's own exports (``dynamic_axes`` of the export in models/recognizer.py)."""


def ort_session(model_bytes: bytes, device: str, batch_dim: str | None) -> tuple[OnnxSession, int]:
    """An ONNX Runtime session for an emotion model and how many crop chunks to run on it at once.

    On the CPU: single-threaded, the batch dimension named ``batch_dim`` fixed to 1 (:class:`OneCropSession`; None:
    left as it is), one chunk per core side by side. On CUDA: ORT's own threads, dynamic batch, one chunk.
    """
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda:
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 0 if cuda else 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    batch = None if cuda else batch_dim
    if batch is not None:
        opts.add_free_dimension_override_by_name(batch, 1)
    raw = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
    session: OnnxSession = raw if batch is None else OneCropSession(raw)
    return session, 1 if cuda else cpu_workers()
