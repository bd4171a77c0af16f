"""Engines run the frames' analyses and hand the outcomes back in the order of the tasks.

* :class:`LocalEngine`: a process pool on this machine, one onnxruntime session per worker process
  (made by the pool's initializer), ``intra_op_threads`` per session. ``workers=0`` analyses in the
  job's own process (debugging, tests).
* :class:`~serving.batch.ray_engine.RayEngine` (``--engine ray``, the ``vipare[ray]`` extra): Ray
  Data with one stateful detector per actor.

Either way the outcomes come back in task order, so the job writes frames in the same order however
many workers ran them, and a resumed job writes the rest in the order a clean run would have.

CPU budget: ``workers x threads <= cores``. The job's own process decodes nothing; it reads and
hashes the frames and writes the results.

Start-up: :meth:`LocalEngine.start` starts the workers at once, so that they load the model while the
job migrates the store and lists and hashes the frames. On Linux they come from a fork server that
imported the library once (:mod:`serving.batch.forkserver`); elsewhere they are spawned.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Protocol

from serving.batch.forkserver import available_cores, default_start_method, ensure_fork_server
from serving.batch.frames import (
    FrameOutcome,
    FrameTask,
    analyze_frame,
    analyze_in_worker,
    init_worker,
    worker_ready,
)
from serving.photos.location import PhotoLocation
from vipare.errors import ModelError
from vipare.settings import Settings

__all__ = ["Engine", "LocalEngine", "thread_budget"]

IN_FLIGHT_PER_WORKER = 4
"""Tasks queued per worker: enough to keep it busy while the job waits on the oldest one."""


def thread_budget(workers: int, threads: int | None = None) -> int:
    """onnxruntime threads per worker: ``threads`` when given, else ``max(1, cores // workers)``."""
    if threads is not None:
        return threads
    return max(1, available_cores() // max(1, workers))


class Engine(Protocol):
    """Runs frame analyses."""

    def describe(self) -> str:
        """One line for the log: the engine, its workers and threads."""
        ...

    def start(self) -> None:
        """Begin starting the workers, if the engine has any to start ahead of :meth:`run`."""
        ...

    def run(self, tasks: Iterable[FrameTask]) -> Iterator[FrameOutcome]:
        """Analyse the tasks; yield one outcome per task, in task order.

        Raises:
            vipare.ModelError: the model cannot be loaded (before the first task is taken).
        """
        ...

    def close(self) -> None:
        """Stop the workers."""
        ...


class LocalEngine:
    """A process pool on this machine.

    Args:
        settings: the library settings; ``intra_op_threads`` is each worker's thread count.
        workers: worker processes; 0 runs the analyses in this process.
        photos_at: the photo store workers put accepted frames in (each opens it); None to keep no photos.
        start_method: how worker processes start (``forkserver`` or ``spawn``); default
            :func:`default_start_method`.
    """

    def __init__(
        self, settings: Settings, *, workers: int, photos_at: PhotoLocation | None, start_method: str | None = None
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.settings = settings
        self.workers = workers
        self.photos_at = photos_at
        self.start_method = start_method or default_start_method()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: list[Future[ModelError | None]] = []

    def describe(self) -> str:
        """``local: N workers x T threads``."""
        where = f"{self.workers} worker processes" if self.workers else "in the job's process"
        return f"local engine, {where} x {self.settings.intra_op_threads} onnxruntime threads"

    def start(self) -> None:
        """Start the worker processes now; each loads its model in the pool's initializer."""
        if self.workers == 0 or self._pool is not None:
            return
        if self.start_method == "forkserver":
            ensure_fork_server()
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=init_worker,
            initargs=(self.settings, self.photos_at),
        )
        # The pool starts a process per waiting call, up to max_workers.
        self._ready = [self._pool.submit(worker_ready) for _ in range(self.workers)]

    def run(self, tasks: Iterable[FrameTask]) -> Iterator[FrameOutcome]:
        """Analyse in the pool, at most ``IN_FLIGHT_PER_WORKER`` tasks per worker queued at once."""
        if self.workers == 0:
            yield from self._inline(tasks)
            return
        self.start()
        assert self._pool is not None
        in_flight: deque[Future[FrameOutcome]] = deque()
        try:
            for ready in self._ready:  # every worker loads the same model: the first error says it all
                error = ready.result()
                if error is not None:
                    raise error
            for task in tasks:
                in_flight.append(self._pool.submit(analyze_in_worker, task))
                while len(in_flight) >= self.workers * IN_FLIGHT_PER_WORKER:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (waiting for the frames they are on); queued frames are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _inline(self, tasks: Iterable[FrameTask]) -> Iterator[FrameOutcome]:
        from vipare.pipeline import Pipeline

        pipeline = Pipeline(settings=self.settings)
        photos = self.photos_at.open() if self.photos_at else None
        for task in tasks:
            yield analyze_frame(pipeline, task, photos)
