"""One entry point for analysing files, shared by the CLI and the web app.

An :class:`AnalysisSession` holds the loaded detector and emotion model (both stateless between calls) and turns
files into the JSON document of ``python -m models analyze --json`` (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.errors import BadInputError
from models.faces import DetectorConfig, FaceDetector
from models.pipeline import ImageAnalysis, analyze_image
from models.recognizer import Backend, EmotionRecognizer, Precision


def image_entry(result: ImageAnalysis) -> dict[str, object]:
    """The ``files`` item of an analysed image."""
    return {"file": result.file, "kind": "image", "width": result.width, "height": result.height,
            "n_faces": len(result.faces), "error": None}


def error_entry(file: str, reason: str, kind: str = "unknown") -> dict[str, object]:
    """The ``files`` item of a file that could not be analysed."""
    return {"file": file, "kind": kind, "width": None, "height": None, "n_faces": 0, "error": reason}


@dataclass
class AnalysisSession:
    """A detector and an emotion model, loaded once.

    Attributes:
        detector: The face detector.
        recognizer: The emotion model.
    """

    detector: FaceDetector
    recognizer: EmotionRecognizer

    @classmethod
    def open(cls, model: str, weights_dir: str | Path | None = None, *, device: str = "cpu",
             backend: Backend = "torch", precision: Precision = "fp32",
             detect_max_side: int | None = None) -> AnalysisSession:
        """Loads the emotion model (weights must be present) and the detector.

        Raises:
            WeightsMissingError: The model's weights are not in the weights folder.
        """
        recognizer = EmotionRecognizer.load(model, weights_dir, device=device, backend=backend, precision=precision)
        detector = FaceDetector(DetectorConfig(max_side=detect_max_side), device=device)
        return cls(detector=detector, recognizer=recognizer)

    def document(self) -> dict[str, object]:
        """An empty analysis document for this session's model."""
        spec = self.recognizer.spec
        return {"model": self.recognizer.name, "weights_hash": self.recognizer.weights_hash,
                "labels": list(spec.labels), "files": [], "faces": [], "tracks": []}

    def analyze_paths(self, paths: Sequence[Path], *, fps: float = 5.0,
                      on_error: Callable[[str], None] | None = None) -> tuple[dict, bool]:
        """Analyses files one by one; a bad file is reported and the rest go on.

        Args:
            paths: Image or video files.
            fps: Video sampling rate (0 for every frame).
            on_error: Called with a one-line message (naming the file and the reason) per bad file.

        Returns:
            The JSON document and whether any file failed.
        """
        doc = self.document()
        failed = False
        for path in paths:
            try:
                self._analyze_one(path, doc, fps=fps)
            except BadInputError as exc:
                failed = True
                doc["files"].append(error_entry(str(path), exc.reason))
                if on_error is not None:
                    on_error(f"{exc.file}: {exc.reason}")
        return doc, failed

    def _analyze_one(self, path: Path, doc: dict, *, fps: float) -> None:
        name = str(path)
        if not path.is_file():
            raise BadInputError(name, "no such file")
        result = analyze_image(path, name, self.detector, self.recognizer)
        doc["files"].append(image_entry(result))
        doc["faces"].extend(f.to_json() for f in result.faces)
