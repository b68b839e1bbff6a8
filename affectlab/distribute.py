"""Studies that outgrow one process: ``analyze`` over N local processes or a Ray cluster, into one label store.

Every worker loads the detector and the emotion model once, then takes files one at a time and stores each file's
faces itself through the analysis service (:class:`affectlab.analysis.AnalysisService`, the same one ``affectlab
analyze`` uses alone): the label store (PostgreSQL through ``DATABASE_URL``; SQLite for local processes, its writes
serialised with retries) is the only shared state. A file the study already holds (same sha256) is skipped before
any model runs, a stopped one resumed, and a file another worker (or another run) is analysing is handed back
``busy`` and dispatched again at the end to wait for that run (:mod:`db.claims`): copies of one file in a batch are
analysed once. The driver shows a progress bar (files, faces/s, time left) on stderr.

Local processes (:func:`run_local`) are started by the driver, which hands each one file at a time over a pipe:

- a worker exits when the driver dies (it watches its parent), so none is left waiting forever;
- a worker that dies (killed, out of memory) gets its file reported ``failed`` with the signal, a new worker takes
  its place and the batch carries on;
- a setup problem in a worker (missing weights, a database that is not migrated or not reachable) ends the run
  with the same message and exit code as without workers (:class:`WorkerSetupError`).

Each worker's ONNX Runtime / torch runs get ``cores // N`` threads (``AFFECTLAB_CPU_WORKERS``), so N workers never
oversubscribe the machine.

Ray: ``address="local"`` starts a local cluster (``num_cpus`` = the worker count); any other address joins an
existing cluster (``ray://head:10001`` or ``auto``). One actor per worker (``num_cpus=1`` each). Workers read the
files by path: on a cluster the inputs must be on storage every node mounts at the same path, and every node needs
AffectLab installed with the weights (``python -m models fetch``) in its ``AFFECTLAB_WEIGHTS_DIR``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectlab.analysis import FileOutcome, Options, Source, setup_message
from affectlab.orphans import exit_with_parent, start_apart
from core.settings import child_env, passed_on, take_on
from models.errors import AffectLabError

ENV_KEYS = (
    "DATABASE_URL",
    "AFFECTLAB_DATA_DIR",
    "AFFECTLAB_WEIGHTS_DIR",
    "AFFECTLAB_MODEL",
    "AFFECTLAB_DEVICE",
    "AFFECTLAB_BACKEND",
    "AFFECTLAB_DETECT_EVERY",
    "AFFECTLAB_STORE_CROPS",
    "AFFECTLAB_MALLOC_TUNE",
)

Reply = tuple[str, Any]
"""What a worker answers: ``("outcome", FileOutcome)`` or ``("setup", message)`` (the run cannot go on)."""


class WorkerSetupError(AffectLabError):
    """A worker could not start or reach the store: the same problem would stop a run without workers."""


@dataclass(frozen=True)
class Job:
    """What every worker needs to analyse files into a study.

    Attributes:
        study: The study.
        model: Emotion model name.
        weights_dir: Weights folder.
        device: ``cpu`` or ``cuda[:N]``.
        backend: ``onnx`` or ``torch``.
        detect_every: Videos: detect on every k-th sampled frame.
        options: How files are analysed and stored (sampling rate, who, commit interval).
        env: The environment variables of the settings (database URL, data folder...), passed to every worker.
    """

    study: str
    model: str
    weights_dir: str
    device: str
    backend: str
    detect_every: int
    options: Options
    env: dict[str, str]


class Worker:
    """One worker: the models and the store, opened once, then one file at a time (a Ray actor, or a process)."""

    def __init__(self, job: Job, threads: int | None = None) -> None:
        """Opens the session and the store in this process; a setup problem is kept and answered to every file.

        Args:
            job: The analysis settings.
            threads: Intra-op threads for this worker's model runs (None: all the cores it may use).
        """
        take_on(job.env, threads)
        from affectlab.analysis import AnalysisService
        from core.settings import Settings
        from db.services import LabelStore
        from models import runtime
        from models.analysis import AnalysisSession

        self.job = job
        self.setup_error: str | None = None
        self.service: AnalysisService | None = None
        url = job.env.get("DATABASE_URL", "")
        try:
            settings = Settings.from_env()
            runtime.tune_malloc(settings.malloc_tune)
            url = settings.database_url
            session = AnalysisSession.open(
                job.model,
                job.weights_dir,
                device=job.device,
                backend=job.backend,  # type: ignore[arg-type]
                detect_every=job.detect_every,
            )
            store = LabelStore.from_settings(settings)
            self.service = AnalysisService(store, job.study, lambda: session, job.options)
        except Exception as exc:  # the driver reports it and stops the run, as a run without workers would
            self.setup_error = setup_message(exc, url) or f"a worker could not start ({type(exc).__name__}: {exc})"

    def run(self, path: str, wait: bool = False) -> Reply:
        """Analyses and stores one file; a bad file is an outcome, a setup problem a ``setup`` reply."""
        if self.service is None:
            return "setup", self.setup_error
        try:
            return "outcome", self.service.analyze(Source.file(path), wait=wait)
        except Exception as exc:
            message = setup_message(exc, self.service.store.url)
            if message is not None:
                return "setup", message
            return "outcome", FileOutcome(path, "failed", error=f"{type(exc).__name__}: {exc}")


def job_env() -> dict[str, str]:
    """The settings' environment variables of this process, for the workers."""
    return passed_on(ENV_KEYS)


def largest_first(files: Sequence[Path]) -> list[Path]:
    """The files by size, largest first (unreadable ones last, where they fail quickly); ties keep their order."""

    def size(f: Path) -> int:
        try:
            return f.stat().st_size
        except OSError:
            return -1

    return sorted(files, key=size, reverse=True)


# ---------------------------------------------------------------------------------------------------- local


def _worker_main(job: Job, threads: int, conn: Any) -> None:
    """A local worker process: files come over ``conn`` (``(path, wait)``; None ends it), replies go back."""
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which ends the workers
    worker = Worker(job, threads)
    if worker.setup_error is not None:
        conn.send(("setup", worker.setup_error))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        conn.send(worker.run(*task))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ": perhaps out of memory" if -code == signal.SIGKILL else ""
        return f"the worker analysing it died ({name}{hint}); analyse it again to resume it"
    return f"the worker analysing it ended unexpectedly (exit code {code}); analyse it again to resume it"


@dataclass
class _Slot:
    process: Any
    conn: Any
    task: tuple[str, bool] | None = None
    ready: bool = False


def run_local(job: Job, files: Sequence[Path], workers: int) -> Iterator[FileOutcome]:
    """Outcomes of ``files`` analysed by ``workers`` local processes, as they finish.

    Raises:
        WorkerSetupError: A worker could not load the models or reach the store (the run stops).
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait as wait_any

    from models.runtime import cpu_workers

    ctx = mp.get_context("spawn")
    threads = max(1, cpu_workers() // workers)
    queue: deque[tuple[str, bool]] = deque((str(f), False) for f in files)
    left = len(queue)
    slots: list[_Slot] = []

    def start() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(job, threads, child), daemon=True)
        start_apart(proc)
        child.close()
        slots.append(_Slot(proc, parent))

    for _ in range(max(1, min(workers, left))):
        start()
    idle_deaths = 0
    try:
        while left:
            for slot in slots:
                if slot.ready and slot.task is None and queue:
                    slot.task = queue.popleft()
                    slot.conn.send(slot.task)
            ready = wait_any([s.conn for s in slots] + [s.process.sentinel for s in slots])
            for slot in list(slots):
                if slot.conn not in ready and slot.process.sentinel not in ready:
                    continue
                reply = _receive(slot)
                if reply is None:  # the worker died: its file failed, a new worker takes its place
                    slots.remove(slot)
                    slot.process.join(timeout=5)
                    if slot.task is not None:
                        left -= 1
                        yield FileOutcome(slot.task[0], "failed", error=_death(slot.process.exitcode))
                    else:
                        idle_deaths += 1
                        if idle_deaths > 2 * workers:
                            raise WorkerSetupError(f"worker processes keep dying as they start: {_death(None)}")
                    if len(slots) < min(workers, left):
                        start()
                    continue
                kind, payload = reply
                if kind == "setup":
                    raise WorkerSetupError(payload)
                if kind == "ready":
                    slot.ready = True
                if kind != "outcome":
                    continue
                task, slot.task = slot.task, None
                if payload.status == "busy" and task is not None and not task[1]:
                    queue.append((task[0], True))  # dispatched again at the end, to wait for the other run
                    continue
                left -= 1
                yield payload
    finally:
        for slot in slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        deadline = time.monotonic() + 10
        for slot in slots:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)


def _receive(slot: _Slot) -> Reply | None:
    """The worker's reply, None when it died (nothing to read and its process ended)."""
    try:
        if slot.conn.poll():
            reply: Reply = slot.conn.recv()
            return reply
    except (EOFError, OSError):
        return None
    if not slot.process.is_alive():
        return None
    return "noop", None  # woken with nothing to read and the process still running: look again


# ---------------------------------------------------------------------------------------------------- Ray


def run_ray(job: Job, files: Sequence[Path], address: str, workers: int | None) -> Iterator[FileOutcome]:
    """Outcomes of ``files`` analysed by Ray actors (one per worker), as they finish.

    Args:
        job: The analysis settings.
        files: The files (paths every node can read).
        address: ``local`` for a local cluster, else the address of an existing one.
        workers: Actors to start (None: one per CPU of the cluster).

    Raises:
        WorkerSetupError: An actor could not load the models or reach the store.
    """
    import ray

    root = str(Path(__file__).resolve().parents[1])
    env = {**job.env, "PYTHONPATH": child_env(path_first=root)["PYTHONPATH"]}
    if address == "local":
        ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    else:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
        actor_cls = ray.remote(num_cpus=1)(Worker)
        actors: list[Any] = [
            actor_cls.remote(job, 1 if address == "local" else None) for _ in range(min(n, len(files)) or 1)
        ]
        pending: dict[Any, tuple[Any, tuple[str, bool]]] = {}
        queue: deque[tuple[str, bool]] = deque((str(f), False) for f in files)
        idle = list(actors)
        while queue or pending:
            while idle and queue:
                actor, task = idle.pop(), queue.popleft()
                pending[actor.run.remote(*task)] = (actor, task)
            if not pending:
                raise WorkerSetupError("every Ray actor died; see the Ray logs")
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                actor, task = pending.pop(ref)
                try:
                    kind, payload = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the actor died: its file failed, the others go on
                    yield FileOutcome(task[0], "failed", error=f"the Ray actor analysing it died ({exc})")
                    continue
                idle.append(actor)
                if kind == "setup":
                    raise WorkerSetupError(payload)
                if payload.status == "busy" and not task[1]:
                    queue.append((task[0], True))
                    continue
                yield payload
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------------- driver


class Progress:
    """A progress bar on stderr: files done, faces per second, time left (tqdm; off when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        """Starts the bar for ``total`` files."""
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            unit="file",
            file=sys.stderr,
            disable=None if enabled else True,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        self._faces = 0
        self._t0 = time.perf_counter()

    def update(self, outcome: FileOutcome) -> None:
        """Counts one finished file."""
        if outcome.status == "stored":
            self._faces += outcome.n_faces
        rate = self._faces / max(1e-9, time.perf_counter() - self._t0)
        self._bar.set_postfix_str(f"{rate:.1f} faces/s", refresh=False)
        self._bar.update(1)

    def printing(self) -> Any:
        """A context in which lines printed to stderr or stdout go above the bar instead of into it."""
        return self._bar.external_write_mode(file=sys.stderr)

    def close(self) -> None:
        """Ends the bar."""
        self._bar.close()


def analyze_many(
    job: Job,
    files: Sequence[Path],
    *,
    workers: int,
    ray_address: str | None = None,
    on_outcome: Callable[[FileOutcome], None] | None = None,
    progress: bool = True,
) -> list[FileOutcome]:
    """Analyses files into the study with several workers; outcomes in the order of ``files``.

    Args:
        job: The analysis settings.
        files: The files.
        workers: Local processes (or Ray actors; for Ray, 0 means one per cluster CPU).
        ray_address: None for local processes; ``local`` or a cluster address for Ray.
        on_outcome: Called with each outcome as it finishes.
        progress: Show the progress bar.

    Raises:
        WorkerSetupError: A worker could not load the models or reach the store.
    """
    bar = Progress(len(files), enabled=progress)
    # Largest files first: the last file to start is a small one, so no worker is left alone with a long video.
    order = largest_first(files)
    stream = run_ray(job, order, ray_address, workers or None) if ray_address else run_local(job, order, workers)
    by_file: dict[str, FileOutcome] = {}
    try:
        for outcome in stream:
            by_file[outcome.file] = outcome
            bar.update(outcome)
            if on_outcome is not None:
                with bar.printing():
                    on_outcome(outcome)
    finally:
        bar.close()
    return [by_file[str(f)] for f in files if str(f) in by_file]
