"""One entry point for analysing images and videos, shared by the CLIs, long-video runs and the web app.

An :class:`AnalysisSession` holds the loaded detector, emotion model and engagement model (each loaded once and
stateless between calls: one session serves many requests) and returns typed results:
:class:`models.pipeline.ImageAnalysis` for images, :class:`models.video.VideoAnalysis` for videos. The JSON document
of ``python -m models analyze --json`` (see docs/ARCHITECTURE.md) is built from them by
:meth:`AnalysisSession.analyze_paths`; it is only the CLI's file format (``python -m db ingest`` reads it back).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.settings import DEFAULT_CLASSIFY_EVERY
from models.decode import VIDEO_SUFFIXES, looks_like_video
from models.doc_stream import HOLE, ListSpool, VideoMeta, VideoSpool
from models.engagement import EngagementModel
from models.errors import BadInputError
from models.faces import DetectorConfig, FaceDetector
from models.images import ImageSource
from models.pipeline import ImageAnalysis, analyze_image
from models.ranges import ModelOpener, analyze_video_ranges, run_ranges
from models.recognizer import Backend, EmotionRecognizer, Precision
from models.video import Progress, VideoAnalysis, VideoConfig, analyze_video, analyze_video_chunks, video_json

AnalysisDocument = dict[str, Any]
"""The JSON document of ``python -m models analyze --json``: ``model, weights_hash, labels, files, faces, tracks``."""


def image_entry(result: ImageAnalysis) -> dict[str, object]:
    """The ``files`` item of an analysed image."""
    return {
        "file": result.file,
        "kind": "image",
        "width": result.width,
        "height": result.height,
        "n_faces": len(result.faces),
        "error": None,
    }


def error_entry(file: str, reason: str, kind: str = "unknown") -> dict[str, object]:
    """The ``files`` item of a file that could not be analysed."""
    return {"file": file, "kind": kind, "width": None, "height": None, "n_faces": 0, "error": reason}


def open_models(
    model: str,
    weights_dir: str,
    *,
    device: str = "cpu",
    backend: Backend = "torch",
    precision: Precision = "fp32",
    detect_max_side: int | None = None,
    min_face_size: int = 40,
) -> tuple[FaceDetector, EmotionRecognizer]:
    """Loads the emotion model and the detector as :meth:`AnalysisSession.open` does (also in range workers)."""
    torch_free = backend == "onnx" and device == "cpu"
    recognizer = EmotionRecognizer.load(model, weights_dir, device=device, backend=backend, precision=precision)
    detector = FaceDetector(
        DetectorConfig(max_side=detect_max_side, min_face_size=min_face_size),
        device=device,
        backend="onnx" if torch_free else "torch",
        weights_dir=weights_dir,
    )
    return detector, recognizer


@dataclass(frozen=True)
class AnalysisSession:
    """A detector, an emotion model and the engagement model, loaded once; the one way to analyse a file.

    Attributes:
        detector: The face detector.
        recognizer: The emotion model.
        engagement: The engagement model, or None when its weights are absent.
        video: Video analysis settings (crops are kept per call, see :meth:`analyze_video`).
        range_workers: Processes one video is cut over (models/ranges.py); 1 analyses it in this process.
        opener: Loads this session's detector and emotion model in a range worker (None: no ranges).
    """

    detector: FaceDetector
    recognizer: EmotionRecognizer
    engagement: EngagementModel | None = None
    video: VideoConfig = field(default_factory=VideoConfig)
    range_workers: int = 1
    opener: ModelOpener | None = None

    def with_detection(self, min_face_size: int, detect_max_side: int | None) -> AnalysisSession:
        """This session with other face detection settings, sharing the loaded models (range workers get them too)."""
        config = dataclasses.replace(self.detector.config, min_face_size=min_face_size, max_side=detect_max_side)
        if config == self.detector.config:
            return self
        opener = self.opener
        if isinstance(opener, functools.partial):
            keywords = {**opener.keywords, "min_face_size": min_face_size, "detect_max_side": detect_max_side}
            opener = functools.partial(opener.func, *opener.args, **keywords)
        return dataclasses.replace(self, detector=self.detector.with_config(config), opener=opener)

    @classmethod
    def open(
        cls,
        model: str,
        weights_dir: str | Path,
        *,
        device: str = "cpu",
        backend: Backend = "torch",
        precision: Precision = "fp32",
        detect_max_side: int | None = None,
        detect_every: int = 1,
        classify_every: int | None = None,
        min_face_size: int = 40,
        workers: int | None = None,
    ) -> AnalysisSession:
        """Loads the emotion model (weights must be present) and the detector.

        ``backend="onnx"`` on the CPU is the torch-free path: the detector's nets and the emotion model on ONNX
        Runtime (exported once from the verified weights into the weights folder), NumPy glue, engagement in NumPy;
        nothing imports torch once the exports exist. ``torch`` is the reference-exact path.

        ``classify_every``: videos: every face of every n-th sampled frame is classified, a still face between
        reuses the prediction of the face it follows (``VideoConfig.classify_every``); None for
        ``DEFAULT_CLASSIFY_EVERY`` with ``detect_every > 1`` and 1 (every face, exact) with ``detect_every = 1``.

        ``workers``: processes a long video is cut over (time ranges, models/ranges.py; the result is the one
        process's); None for one per core this process may use on the CPU (:func:`models.runtime.cpu_workers`),
        one on a GPU.

        Raises:
            WeightsMissingError: The model's weights are not in the weights folder.
        """
        from models.runtime import cpu_workers

        wdir = Path(weights_dir).expanduser()
        torch_free = backend == "onnx" and device == "cpu"
        opener = functools.partial(
            open_models,
            model,
            str(wdir),
            device=device,
            backend=backend,
            precision=precision,
            detect_max_side=detect_max_side,
            min_face_size=min_face_size,
        )
        detector, recognizer = opener()
        if workers is None:
            workers = cpu_workers() if device == "cpu" else 1
        engagement = EngagementModel.load(wdir, device=device, numpy=torch_free)
        if classify_every is None:
            classify_every = DEFAULT_CLASSIFY_EVERY if detect_every > 1 else 1
        video = VideoConfig(detect_every=detect_every, classify_every=max(1, classify_every))
        if torch_free:
            # ONNX Runtime keeps memory per input shape and batch: one frame per detection and one crop per
            # worker per classification run are both the fastest and the smallest here (59 s 360p video at 5 fps:
            # 315 MB peak and 8.4 s, vs 722 MB and 11-16 s with batches of 8 frames / 8 crops).
            video = dataclasses.replace(video, detect_batch=1, classify_batch=max(1, recognizer.onnx_workers))
        return cls(
            detector=detector,
            recognizer=recognizer,
            engagement=engagement,
            video=video,
            range_workers=max(1, workers),
            opener=opener,
        )

    def document(self) -> AnalysisDocument:
        """An empty analysis document for this session's model."""
        spec = self.recognizer.spec
        return {
            "model": self.recognizer.name,
            "weights_hash": self.recognizer.weights_hash,
            "labels": list(spec.labels),
            "files": [],
            "faces": [],
            "tracks": [],
        }

    def analyze_paths(
        self,
        paths: Sequence[Path],
        *,
        fps: float = 5.0,
        on_error: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> tuple[AnalysisDocument, bool]:
        """Analyses files one by one; a bad file is reported and the rest go on.

        Args:
            paths: Image or video files.
            fps: Video sampling rate (0 for every frame).
            on_error: Called with a one-line message (naming the file and the reason) per bad file.
            on_warning: Called with ``FILE: problem`` for each problem that did not stop a file's analysis
                (damaged packets skipped, truncated video); the problems are kept in the document too.

        Returns:
            The JSON document and whether any file failed.
        """
        doc = self.document()
        failed = False
        for _, faces in self._analyze_each(paths, doc, fps=fps, on_error=on_error, on_warning=on_warning):
            if faces is None:
                failed = True
            else:
                doc["faces"].extend(faces)
        return doc, failed

    def write_document(
        self,
        paths: Sequence[Path],
        out: IO[str],
        *,
        fps: float = 5.0,
        on_error: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
        stretch_s: float = 30.0,
    ) -> bool:
        """Writes the JSON document of :meth:`analyze_paths` to ``out`` in bounded memory, whatever the videos' length.

        The same text as ``json.dumps(doc, indent=2, ensure_ascii=False)``: a video's faces come ``stretch_s``
        seconds of video at a time (from each range's file when it is cut into ranges), are tracked as they come and
        spooled to temporary files with their features (:class:`models.doc_stream.VideoSpool`); faces and tracks are
        copied into the document at the end (:class:`models.doc_stream.ListSpool`).

        Returns:
            Whether any file failed.
        """
        doc = self.document()
        failed = False
        faces, tracks = ListSpool(), ListSpool()
        try:
            for path in paths:
                try:
                    self._write_one(path, doc, faces, tracks, fps=fps, on_warning=on_warning, stretch_s=stretch_s)
                except BadInputError as exc:
                    failed = True
                    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "unknown"
                    doc["files"].append(error_entry(str(path), exc.reason, kind))
                    if on_error is not None:
                        on_error(f"{exc.file}: {exc.reason}")
            doc["faces"], doc["tracks"] = HOLE, HOLE + HOLE
            head, rest = json.dumps(doc, indent=2, ensure_ascii=False).split(json.dumps(HOLE), 1)
            middle, tail = rest.split(json.dumps(HOLE + HOLE), 1)
            out.write(head)
            faces.copy_to(out)
            out.write(middle)
            tracks.copy_to(out)
            out.write(tail)
        finally:
            faces.close()
            tracks.close()
        return failed

    def _write_one(
        self,
        path: Path,
        doc: AnalysisDocument,
        faces: ListSpool,
        tracks: ListSpool,
        *,
        fps: float,
        on_warning: Callable[[str], None] | None,
        stretch_s: float,
    ) -> None:
        """One file into the document: its ``files`` item, its faces and tracks into the spools."""
        name = str(path)
        if not path.is_file():
            raise BadInputError(name, "no such file")
        if not looks_like_video(path):
            result = self.analyze_image(path, name)
            doc["files"].append(image_entry(result))
            for face in result.faces:
                faces.add(face.to_json())
            return
        spec = self.recognizer.spec
        spool = VideoSpool(name, self.video, self.engagement, spec.name, spec.feature_dim)
        try:
            meta = self._stream_video(path, name, fps, spool, stretch_s)
            entry = spool.write(meta, faces, tracks)
        finally:
            spool.close()
        if on_warning is not None:
            for w in meta.warnings:
                on_warning(f"{name}: {w}")
        doc["files"].append(entry)

    def _stream_video(self, path: Path, name: str, fps: float, spool: VideoSpool, stretch_s: float) -> VideoMeta:
        """Analyses a video into ``spool`` a stretch at a time (ranges as :meth:`analyze_video` cuts them)."""
        config = dataclasses.replace(self.video, keep_crops=False)
        if config.adaptive is not None:  # not cut into stretches: held whole, as analyze_video holds it
            whole = self.analyze_video(path, name, fps=fps)
            spool.add(dataclasses.replace(f, track=None) for f in whole.faces)
            return VideoMeta(
                whole.frames_sampled,
                whole.frames_analyzed,
                whole.frames_decoded,
                whole.duration,
                whole.fps,
                whole.sample_fps,
                whole.width,
                whole.height,
                whole.rotation,
                tuple(whole.warnings),
            )
        if self.range_workers > 1 and self.opener is not None:
            with tempfile.TemporaryDirectory(prefix="affectlab-ranges-") as folder:
                run = run_ranges(
                    path,
                    name,
                    self.opener,
                    fps or None,
                    workers=self.range_workers,
                    config=config,
                    loaded=(self.detector, self.recognizer),
                    spool_dir=folder,
                )
                if run is not None:
                    spool.add(run.faces())
                    return run.meta(path, fps or None)
        last = None
        for chunk in analyze_video_chunks(
            path, name, self.detector, self.recognizer, fps or None, config=config, commit_every_s=stretch_s
        ):
            spool.add(chunk.faces)
            last = chunk
        assert last is not None
        return VideoMeta(
            last.frames_sampled,
            last.frames_analyzed,
            last.frames_decoded,
            last.duration,
            last.fps,
            fps if fps and fps > 0 else None,
            last.width,
            last.height,
            last.rotation,
            last.warnings,
        )

    def _analyze_each(
        self,
        paths: Sequence[Path],
        doc: AnalysisDocument,
        *,
        fps: float,
        on_error: Callable[[str], None] | None,
        on_warning: Callable[[str], None] | None,
    ) -> Iterator[tuple[Path, list[dict[str, Any]] | None]]:
        """Analyses files one by one into ``doc``'s files and tracks; yields each file's faces (None: it failed)."""
        for path in paths:
            try:
                faces = self._analyze_one(path, doc, fps=fps, on_warning=on_warning)
            except BadInputError as exc:
                kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "unknown"
                doc["files"].append(error_entry(str(path), exc.reason, kind))
                if on_error is not None:
                    on_error(f"{exc.file}: {exc.reason}")
                yield path, None
                continue
            yield path, faces

    def analyze_image(self, src: ImageSource, name: str, *, keep_crops: bool = False) -> ImageAnalysis:
        """Analyses one image (a path, or its bytes).

        Raises:
            BadInputError: The file is not a readable image.
        """
        return analyze_image(src, name, self.detector, self.recognizer, keep_crops)

    def analyze_video(
        self, path: Path, name: str, *, fps: float = 5.0, keep_crops: bool = False, progress: Progress | None = None
    ) -> VideoAnalysis:
        """Analyses one video (every face tracked; engagement per track when the weights are present).

        A video long enough is cut into time ranges over ``range_workers`` processes (models/ranges.py): the same
        result as one process, sooner.

        Raises:
            BadInputError: The file is not a readable video.
        """
        config = dataclasses.replace(self.video, keep_crops=keep_crops)
        if self.range_workers > 1 and self.opener is not None:
            cut = analyze_video_ranges(
                path,
                name,
                self.opener,
                fps or None,
                workers=self.range_workers,
                config=config,
                engagement=self.engagement,
                recognizer=self.recognizer,
                progress=progress,
                loaded=(self.detector, self.recognizer),
            )
            if cut is not None:
                return cut
        return analyze_video(
            path,
            name,
            self.detector,
            self.recognizer,
            fps or None,
            config=config,
            engagement=self.engagement,
            progress=progress,
        )

    def analyze_file(
        self,
        path: Path,
        name: str | None = None,
        *,
        fps: float = 5.0,
        keep_crops: bool = False,
        progress: Progress | None = None,
    ) -> ImageAnalysis | VideoAnalysis:
        """Analyses an image or a video file (a video by its suffix or by probing: animated GIFs are videos).

        Raises:
            BadInputError: The file is missing or not a readable image or video.
        """
        label = name or str(path)
        if not path.is_file():
            raise BadInputError(label, "no such file")
        if looks_like_video(path):
            return self.analyze_video(path, label, fps=fps, keep_crops=keep_crops, progress=progress)
        return self.analyze_image(path, label, keep_crops=keep_crops)

    def _analyze_one(
        self, path: Path, doc: AnalysisDocument, *, fps: float, on_warning: Callable[[str], None] | None = None
    ) -> list[dict[str, Any]]:
        """Analyses one file into ``doc``'s ``files`` and ``tracks``; returns its faces' JSON items."""
        name = str(path)
        result = self.analyze_file(path, name, fps=fps)
        if isinstance(result, ImageAnalysis):
            doc["files"].append(image_entry(result))
            return [f.to_json() for f in result.faces]
        part = video_json(result)
        if on_warning is not None:
            for w in result.warnings:
                on_warning(f"{name}: {w}")
        doc["files"].append(part["file"])
        doc["tracks"].extend({"file": name, **t} for t in part["tracks"])
        faces: list[dict[str, Any]] = part["faces"]
        return faces
