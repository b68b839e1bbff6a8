"""Studies that outgrow one process: ``analyze`` over N local processes or a Ray cluster, into one label store.

Every worker loads the detector and the emotion model once, then takes files one at a time and stores each file's
faces itself (:func:`affectlab.cli.analyze_file`): the label store (PostgreSQL through ``DATABASE_URL``; SQLite for
local processes, its writes serialised with retries) is the only shared state. A file the study already holds (same
sha256) is skipped before any model runs, so an interrupted run is resumed by running it again; a bad file is
reported and the others go on. The driver shows a progress bar (files, faces/s, time left) on stderr.

Local processes split the cores: each worker's ONNX Runtime / torch runs get ``cores // N`` threads
(``AFFECTLAB_CPU_WORKERS``), so N workers never oversubscribe the machine.

Ray: ``address="local"`` starts a local cluster (``num_cpus`` = the worker count); any other address joins an
existing cluster (``ray://head:10001`` or ``auto``). One actor per worker (``num_cpus=1`` each). Workers read the
files by path: on a cluster the inputs must be on storage every node mounts at the same path, and every node needs
AffectLab installed with the weights (``python -m models fetch``) in its ``AFFECTLAB_WEIGHTS_DIR``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from affectlab.cli import FileOutcome

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
        fps: Video sampling rate.
        uploaded_by: Stored with each media item.
        env: The environment variables of the settings (database URL, data folder...), passed to every worker.
    """

    study: str
    model: str
    weights_dir: str
    device: str
    backend: str
    detect_every: int
    fps: float
    uploaded_by: str | None
    env: dict[str, str]


class Worker:
    """One worker: the models and the store, opened once, then one file at a time."""

    def __init__(self, job: Job, threads: int | None = None) -> None:
        """Opens the session and the store in this process.

        Args:
            job: The analysis settings.
            threads: Intra-op threads for this worker's model runs (None: all the cores it may use).
        """
        os.environ.update(job.env)
        if threads:
            os.environ["AFFECTLAB_CPU_WORKERS"] = str(threads)
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        from affectlab.settings import Settings
        from db.services import LabelStore
        from models import runtime
        from models.analysis import AnalysisSession

        runtime.tune_malloc()
        self.job = job
        self.session = AnalysisSession.open(
            job.model,
            job.weights_dir,
            device=job.device,
            backend=job.backend,  # type: ignore[arg-type]
            detect_every=job.detect_every,
        )
        self.store = LabelStore.from_settings(Settings.from_env())

    def run(self, path: str) -> FileOutcome:
        """Analyses and stores one file; never raises for a bad file (the outcome says why)."""
        from affectlab.cli import FileOutcome, analyze_file

        try:
            return analyze_file(
                self.session, self.store, Path(path), self.job.study, fps=self.job.fps, uploaded_by=self.job.uploaded_by
            )
        except Exception as exc:  # a worker survives any one file; the driver reports it
            return FileOutcome(path, "failed", error=f"{type(exc).__name__}: {exc}")


_WORKER: Worker | None = None


def _init_process(job: Job, threads: int) -> None:
    global _WORKER
    _WORKER = Worker(job, threads)


def _run_in_process(path: str) -> FileOutcome:
    assert _WORKER is not None
    return _WORKER.run(path)


def job_env() -> dict[str, str]:
    """The settings' environment variables of this process, for the workers."""
    return {k: os.environ[k] for k in ENV_KEYS if k in os.environ}


def largest_first(files: Sequence[Path]) -> list[Path]:
    """The files by size, largest first (unreadable ones last, where they fail quickly); ties keep their order."""

    def size(f: Path) -> int:
        try:
            return f.stat().st_size
        except OSError:
            return -1

    return sorted(files, key=size, reverse=True)


def run_local(job: Job, files: Sequence[Path], workers: int) -> Iterator[FileOutcome]:
    """Outcomes of ``files`` analysed by ``workers`` local processes, as they finish."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from models.runtime import cpu_workers

    threads = max(1, cpu_workers() // workers)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_process, initargs=(job, threads)
    ) as pool:
        futures = [pool.submit(_run_in_process, str(f)) for f in files]
        for fut in as_completed(futures):
            yield fut.result()


def run_ray(job: Job, files: Sequence[Path], address: str, workers: int | None) -> Iterator[FileOutcome]:
    """Outcomes of ``files`` analysed by Ray actors (one per worker), as they finish.

    Args:
        job: The analysis settings.
        files: The files (paths every node can read).
        address: ``local`` for a local cluster, else the address of an existing one.
        workers: Actors to start (None: one per CPU of the cluster).
    """
    import ray

    root = str(Path(__file__).resolve().parents[1])
    env = {**job.env, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    if address == "local":
        ray.init(num_cpus=workers or None, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    else:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor_cls = ray.remote(num_cpus=1)(Worker)
        actors = [actor_cls.remote(job, 1 if address == "local" else None) for _ in range(min(n, len(files)) or 1)]
        pending: dict[Any, Any] = {}
        queue = [str(f) for f in files][::-1]
        idle = list(actors)
        while queue or pending:
            while idle and queue:
                actor = idle.pop()
                pending[actor.run.remote(queue.pop())] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                idle.append(pending.pop(ref))
                yield ray.get(ref)
    finally:
        ray.shutdown()


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
