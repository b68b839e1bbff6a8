"""facenet-pytorch's MTCNN nets as ONNX files in the weights folder, and the ONNX Runtime sessions that run them.

The three nets (P-Net, R-Net, O-Net; their weights ship inside the facenet-pytorch wheel) are exported once, with
torch, to ``<weights_dir>/mtcnn-onnx/{pnet,rnet,onet}.onnx`` (P-Net with a dynamic image size, all with a dynamic
batch). That happens on first use or at ``python -m models fetch`` time; from then on, detection needs neither torch
nor facenet-pytorch (:mod:`models.mtcnn_np`). Each file is written to a temporary name and moved into place, so
concurrent first uses never read a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.runtime import OnnxSession, cpu_workers

NETS = ("pnet", "rnet", "onet")
FOLDER = "mtcnn-onnx"
OPSET = 17


def mtcnn_onnx_dir(weights_dir: str | Path) -> Path:
    """Where the exported nets live."""
    return Path(weights_dir) / FOLDER


def is_exported(weights_dir: str | Path) -> bool:
    """Whether all three nets are already exported in ``weights_dir``."""
    folder = mtcnn_onnx_dir(weights_dir)
    return all((folder / f"{n}.onnx").is_file() for n in NETS)


def export_mtcnn(weights_dir: str | Path) -> Path:
    """Exports facenet-pytorch's P-, R- and O-Net to ONNX in the weights folder (needs torch; once).

    Returns:
        The folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``.
    """
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    folder = mtcnn_onnx_dir(weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "pnet": (PNet, (1, 3, 64, 64), ["reg", "probs"], {0: "n", 2: "h", 3: "w"}),
        "rnet": (RNet, (1, 3, 24, 24), ["reg", "probs"], {0: "n"}),
        "onet": (ONet, (1, 3, 48, 48), ["reg", "landmarks", "probs"], {0: "n"}),
    }
    for name, (cls, shape, outputs, in_axes) in specs.items():
        final = folder / f"{name}.onnx"
        if final.is_file():
            continue
        net = cls().eval()
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        out_axes = {o: ({0: "n", 2: "oh", 3: "ow"} if name == "pnet" else {0: "n"}) for o in outputs}
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                net,
                (torch.zeros(shape),),
                str(tmp),
                input_names=["input"],
                output_names=outputs,
                dynamic_axes={"input": in_axes, **out_axes},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, final)
    return folder


class OnnxMtcnn:
    """The three nets on ONNX Runtime (CPU), each a callable NCHW float32 -> outputs for :mod:`models.mtcnn_np`."""

    def __init__(self, weights_dir: str | Path, threads: int | None = None) -> None:
        """Opens the exported nets, exporting them first when they are missing (torch needed that once).

        Args:
            weights_dir: The weights folder.
            threads: Intra-op threads per run (None: :func:`models.runtime.cpu_workers`).
        """
        import onnxruntime as ort

        if not is_exported(weights_dir):
            export_mtcnn(weights_dir)
        folder = mtcnn_onnx_dir(weights_dir)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads or cpu_workers()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions: dict[str, OnnxSession] = {
            n: ort.InferenceSession(str(folder / f"{n}.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
            for n in NETS
        }

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        return self._sessions[name].run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})

    def pnet(self, x: np.ndarray) -> list[np.ndarray]:
        """P-Net: [reg (N, 4, h, w), probs (N, 2, h, w)]."""
        return self._run("pnet", x)

    def rnet(self, x: np.ndarray) -> list[np.ndarray]:
        """R-Net: [reg (N, 4), probs (N, 2)]."""
        return self._run("rnet", x)

    def onet(self, x: np.ndarray) -> list[np.ndarray]:
        """O-Net: [reg (N, 4), landmarks (N, 10), probs (N, 2)]."""
        return self._run("onet", x)
