"""The checkpoint registry: one entry per published HSEmotion / EmotiEffLib file.

This is the only place in AffectLab where a download URL is written. Each entry pins the file to a commit (never a
branch) and to its git blob SHA-1 (what ``git hash-object FILE`` prints), which the downloader checks before anything
is unpickled or loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.settings import DEFAULT_MODEL
from models.errors import AffectLabError

CheckpointFormat = Literal["torch_pickle", "onnx", "keras_h5"]
"""How a published file stores its weights: a pickled ``nn.Module``, an ONNX graph, or a Keras HDF5 file."""

Preprocessing = Literal["torchvision", "caffe"]
"""How a crop becomes the model's input after resizing: ``torchvision`` (RGB, ``/255``, then ``(x - mean) / std``:
``ToTensor`` + ``Normalize``) or ``caffe`` (BGR channel order, raw 0-255 values minus ``mean``, no scaling: Keras's
``imagenet_utils.preprocess_input(mode="caffe")``, what ``mobilenet_7`` was trained with; ``mean`` is then in BGR
order and in pixel units)."""

EMOTIONS_8: tuple[str, ...] = (
    "Anger",
    "Contempt",
    "Disgust",
    "Fear",
    "Happiness",
    "Neutral",
    "Sadness",
    "Surprise",
)
"""The 8 AffectNet classes in the reference's index order (alphabetical ImageFolder order, not AffectNet's own)."""

EMOTIONS_7: tuple[str, ...] = tuple(c for c in EMOTIONS_8 if c != "Contempt")
"""The 7-class models: the 8 classes without Contempt, same order."""

ENGAGEMENT_CLASSES: tuple[str, ...] = ("Distracted", "Engaged")

ENGAGEMENT_LEVELS: tuple[float, ...] = (0.0, 0.33, 0.66, 1.0)
"""The human engagement scale (EngageWild's four levels): what annotators choose and fine-tuning rounds to."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

_EMOTIEFFLIB = ("sb-ai-lab/EmotiEffLib", "f1df0e8548c666d268826e50b7de107fd5553e9d")
_HSEMOTION = ("av-savchenko/face-emotion-recognition", "207ed4981625d1f643e25b4a3014e2eed20a0b46")

LICENSE_NOTE = (
    "Code and weights Apache-2.0 ({repo}); trained on AffectNet (and AFEW/VGAF for *_afew/*_vgaf), whose terms "
    "restrict use to non-commercial research."
)


@dataclass(frozen=True)
class ModelSpec:
    """A registered checkpoint.

    Attributes:
        name: Registry name (``enet_b0_8_best_vgaf``; ONNX files carry the ``.onnx`` suffix).
        path: Path of the file inside its repository.
        repo: GitHub ``owner/name`` holding the file.
        commit: Commit the URL is pinned to.
        git_blob_sha1: SHA-1 of ``b"blob <size>" + NUL + bytes`` (``git hash-object``) of the published file.
        arch: ``timm`` model name, ``mobilefacenet``, ``keras_mobilenet_v1`` or ``engagement_attention``.
        fmt: ``torch_pickle`` (a whole pickled ``nn.Module``), ``onnx`` or ``keras_h5``.
        input_size: Square input side in pixels.
        mean: Per-channel normalisation mean (RGB, on [0, 1] pixels; for ``caffe`` preprocessing BGR, 0-255).
        std: Per-channel normalisation std.
        preprocessing: ``torchvision`` or ``caffe`` (see :data:`Preprocessing`).
        labels: Emotion class names in output order (empty for the engagement model).
        has_va: Whether outputs 8 and 9 are valence and arousal.
        feature_dim: Size of the backbone features fed to the classifier.
        license: Licence notes of the weights.
        pickled_with: timm version that pickled a ``torch_pickle`` file (``0.9.7`` or ``0.6``).
        runnable: Whether AffectLab can run this checkpoint.
        note: Why not, when ``runnable`` is False; otherwise free text.
    """

    name: str
    path: str
    repo: str
    commit: str
    git_blob_sha1: str
    arch: str
    fmt: CheckpointFormat
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, ...]
    has_va: bool
    feature_dim: int
    license: str
    pickled_with: str = ""
    runnable: bool = True
    note: str = ""
    preprocessing: Preprocessing = "torchvision"

    @property
    def stores_safetensors(self) -> bool:
        """Whether the file is converted to safetensors and runs in PyTorch.

        True for pickled checkpoints and Keras emotion models (``mobilenet_7``, see ``models.keras_mobilenet``); ONNX
        files and the engagement model are kept as they are.
        """
        return self.fmt == "torch_pickle" or (self.fmt == "keras_h5" and self.is_emotion_model)

    @property
    def url(self) -> str:
        """The pinned download URL."""
        return f"https://github.com/{self.repo}/raw/{self.commit}/{self.path}"

    @property
    def filename(self) -> str:
        """Base name of the published file."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def num_outputs(self) -> int:
        """Number of raw outputs of the classifier (emotion logits, plus V and A)."""
        return len(self.labels) + (2 if self.has_va else 0)

    @property
    def is_emotion_model(self) -> bool:
        """Whether this checkpoint classifies emotions (rather than engagement)."""
        return bool(self.labels)


def _spec(
    name: str,
    path: str,
    source: tuple[str, str],
    sha1: str,
    arch: str,
    size: int,
    labels: tuple[str, ...],
    has_va: bool,
    feature_dim: int,
    *,
    fmt: CheckpointFormat = "torch_pickle",
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    pickled_with: str = "0.9.7",
    runnable: bool = True,
    note: str = "",
    preprocessing: Preprocessing = "torchvision",
) -> ModelSpec:
    repo, commit = source
    return ModelSpec(
        name=name,
        path=path,
        repo=repo,
        commit=commit,
        git_blob_sha1=sha1,
        arch=arch,
        fmt=fmt,
        input_size=size,
        mean=mean,
        std=std,
        labels=labels,
        has_va=has_va,
        feature_dim=feature_dim,
        license=LICENSE_NOTE.format(repo=repo),
        pickled_with=pickled_with if fmt == "torch_pickle" else "",
        runnable=runnable,
        note=note,
        preprocessing=preprocessing,
    )


_AE = "models/affectnet_emotions/"
_ONNX = _AE + "onnx/"
_B0, _B2, _MVIT, _MBF = "tf_efficientnet_b0", "tf_efficientnet_b2", "mobilevitv2_150", "mobilefacenet"

_SPECS: tuple[ModelSpec, ...] = (
    _spec(
        "enet_b0_8_best_vgaf",
        _AE + "enet_b0_8_best_vgaf.pt",
        _EMOTIEFFLIB,
        "7219cfb037209b253ea8b81cf969e60a00e9181c",
        _B0,
        224,
        EMOTIONS_8,
        False,
        1280,
    ),
    _spec(
        "enet_b0_8_best_afew",
        _AE + "enet_b0_8_best_afew.pt",
        _EMOTIEFFLIB,
        "9540c8beff661f1c2fca16de63b530cce24bb17d",
        _B0,
        224,
        EMOTIONS_8,
        False,
        1280,
    ),
    _spec(
        "enet_b0_8_va_mtl",
        _AE + "enet_b0_8_va_mtl.pt",
        _EMOTIEFFLIB,
        "b7223bd1ab092a1b5a42bc04a5f4fbfe4d9f8b9b",
        _B0,
        224,
        EMOTIONS_8,
        True,
        1280,
    ),
    _spec(
        "enet_b0_7",
        _AE + "enet_b0_7.pt",
        _HSEMOTION,
        "47b748b42622ae1489a389588e9526d44ab01009",
        _B0,
        224,
        EMOTIONS_7,
        False,
        1280,
        pickled_with="0.6",
    ),
    _spec(
        "enet_b2_7",
        _AE + "enet_b2_7.pt",
        _EMOTIEFFLIB,
        "5a8ccbb17913461296003be726a22b6fc40d602b",
        _B2,
        260,
        EMOTIONS_7,
        False,
        1408,
    ),
    _spec(
        "enet_b2_8",
        _AE + "enet_b2_8.pt",
        _EMOTIEFFLIB,
        "eed81e6368877e89f8a99cfabadae7c3ddc3a949",
        _B2,
        260,
        EMOTIONS_8,
        False,
        1408,
    ),
    _spec(
        "enet_b2_8_best",
        _AE + "enet_b2_8_best.pt",
        _HSEMOTION,
        "43be51786607c44fd13df41a497056c6accf7188",
        _B2,
        260,
        EMOTIONS_8,
        False,
        1408,
    ),
    _spec(
        "mbf_va_mtl",
        _AE + "mbf_va_mtl.pt",
        _EMOTIEFFLIB,
        "522bdabca7c655a7abde9cfca17e3dfcceadf9a0",
        _MBF,
        112,
        EMOTIONS_8,
        True,
        512,
        mean=HALF,
        std=HALF,
    ),
    _spec(
        "mobilevit_va_mtl",
        _AE + "mobilevit_va_mtl.pt",
        _EMOTIEFFLIB,
        "d648cb1a20a5b1ab0af64192ec9be39e5cdd3961",
        _MVIT,
        224,
        EMOTIONS_8,
        True,
        768,
    ),
    _spec(
        "mobilenet_7",
        _AE + "mobilenet_7.h5",
        _EMOTIEFFLIB,
        "3a3d5bb84506960a3ace7586b42b010623bae099",
        "keras_mobilenet_v1",
        224,
        EMOTIONS_7,
        False,
        1024,
        fmt="keras_h5",
        mean=(103.939, 116.779, 123.68),
        std=(1.0, 1.0, 1.0),
        preprocessing="caffe",
        note="Keras MobileNet v1 rebuilt in PyTorch from the .h5 weights (no TensorFlow); BGR input minus the "
        "ImageNet mean, no scaling.",
    ),
    _spec(
        "enet_b0_8_best_afew.onnx",
        _ONNX + "enet_b0_8_best_afew.onnx",
        _EMOTIEFFLIB,
        "d87faf71e8756d68c701ffd88b4cde4be460f57d",
        _B0,
        224,
        EMOTIONS_8,
        False,
        1280,
        fmt="onnx",
    ),
    _spec(
        "enet_b0_8_best_vgaf.onnx",
        _ONNX + "enet_b0_8_best_vgaf.onnx",
        _EMOTIEFFLIB,
        "49772db4e87ee6df57087fba131832a959e5c64d",
        _B0,
        224,
        EMOTIONS_8,
        False,
        1280,
        fmt="onnx",
    ),
    _spec(
        "enet_b0_8_va_mtl.onnx",
        _ONNX + "enet_b0_8_va_mtl.onnx",
        _EMOTIEFFLIB,
        "7ce9d6dd5b82b260bc19bfe7822a6ffa1abb6011",
        _B0,
        224,
        EMOTIONS_8,
        True,
        1280,
        fmt="onnx",
    ),
    _spec(
        "enet_b2_7.onnx",
        _ONNX + "enet_b2_7.onnx",
        _EMOTIEFFLIB,
        "cdd6a6070b72ed2e59e15e810ae0ecdbcb0f7626",
        _B2,
        260,
        EMOTIONS_7,
        False,
        1408,
        fmt="onnx",
    ),
    _spec(
        "enet_b2_8.onnx",
        _ONNX + "enet_b2_8.onnx",
        _EMOTIEFFLIB,
        "a7cb612cbab1ce3d50dd52e57285fb2c7ea6d0d9",
        _B2,
        260,
        EMOTIONS_8,
        False,
        1408,
        fmt="onnx",
    ),
    _spec(
        "mbf_va_mtl.onnx",
        _ONNX + "mbf_va_mtl.onnx",
        _EMOTIEFFLIB,
        "194db927ec135679e5cd0a267c5605e2e9d68e7e",
        _MBF,
        112,
        EMOTIONS_8,
        True,
        512,
        fmt="onnx",
        mean=HALF,
        std=HALF,
    ),
    _spec(
        "mobilevit_va_mtl.onnx",
        _ONNX + "mobilevit_va_mtl.onnx",
        _EMOTIEFFLIB,
        "bed5781a1af9924536638ac3786603e124ee900e",
        _MVIT,
        224,
        EMOTIONS_8,
        True,
        768,
        fmt="onnx",
    ),
    _spec(
        "engagement_single_attention",
        "models/engagement_classification/engagement_single_attention.h5",
        _EMOTIEFFLIB,
        "25921a298a0ea8cd6761960ef7233aae071d7ec8",
        "engagement_attention",
        0,
        (),
        False,
        2560,
        fmt="keras_h5",
        note="Attention over 128-frame windows of enet_b0 features (1280-d) with their window std (2560-d).",
    ),
)

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
assert DEFAULT_MODEL in REGISTRY, "core.settings.DEFAULT_MODEL names a registry entry"
ENGAGEMENT_MODEL = "engagement_single_attention"


def app_models(model: str = DEFAULT_MODEL) -> tuple[str, ...]:
    """The checkpoints the web app uses by default: the emotion model ``model`` and the engagement model.

    The one list of what a deployment needs: ``python -m models fetch --defaults`` (the Docker image's build step and
    start script), the Analyze page's warning and the Models page read it.
    """
    return (model, ENGAGEMENT_MODEL)


DEFAULT_APP_MODELS: tuple[str, ...] = app_models()
""":func:`app_models` of the default emotion model."""


def mirrored_url(url: str, mirror: str) -> str:
    """``url`` with its scheme and host replaced by the base URL ``mirror`` (``url`` itself for an empty mirror)."""
    if not mirror:
        return url
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return mirror.rstrip("/") + path


class UnknownModelError(AffectLabError):
    """A model name that is not in the registry.

    Attributes:
        name: The name asked for.
    """

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(REGISTRY))
        super().__init__(
            f"unknown model {name!r}: pick one of {known}, or a fine-tuned version (base@...) from "
            "`python -m models list`"
        )
        self.name = name


def get_spec(name: str) -> ModelSpec:
    """Returns the registry entry called ``name``.

    Raises:
        UnknownModelError: If no such entry exists.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name) from None


def emotion_models() -> list[ModelSpec]:
    """The runnable emotion checkpoints stored as safetensors (PyTorch and Keras files, not ONNX), default first."""
    specs = [s for s in _SPECS if s.is_emotion_model and s.runnable and s.stores_safetensors]
    return sorted(specs, key=lambda s: s.name != DEFAULT_MODEL)


def onnx_variant(name: str) -> ModelSpec | None:
    """The ONNX file published for the PyTorch checkpoint ``name``, if any."""
    return REGISTRY.get(f"{name}.onnx")
