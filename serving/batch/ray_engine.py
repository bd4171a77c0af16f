"""``--engine ray``: the same job on Ray Data, for when one machine is not enough (the ``vipare[ray]`` extra).

The driver (the ``vipare batch`` process) lists, hashes and skips frames as the local engine does,
then::

    ray.data.from_items(tasks)                       one row per frame to analyse (a pickled FrameTask)
      .map_batches(DetectorActor, concurrency=N,     N actors, each with its own onnxruntime session
                   num_cpus=threads, batch_size=B)   (loaded once, in the actor's constructor)
      .iter_rows()                                   outcomes back in task order (preserve_order)

and writes every result itself, through the same sink as the local engine. The actors keep no
photos: the driver re-reads an accepted frame, checks its sha256 and puts it in the store.

``ray.init()`` starts a local Ray instance by default (``num_cpus = workers x threads``); with
``--ray-address`` (``ray://head:10001`` or ``auto``) the job joins an existing cluster. Its nodes then
need vipare installed with the same model at the same path (``VIPARE_MODEL_PATH``) and the frames at
the same path (a shared file system), since rows carry paths, not pixels.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from serving.batch.frames import FrameOutcome, FrameTask, analyze_frame, set_thread_budget
from vipare.detection import Detector
from vipare.pipeline import Pipeline
from vipare.settings import Settings

__all__ = ["DetectorActor", "RayEngine", "ray_available"]


def ray_available() -> bool:
    """True when Ray Data can be imported."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


class DetectorActor:
    """A Ray Data actor: one pipeline (one onnxruntime session) for every batch it is given.

    Args:
        settings: the library settings; ``intra_op_threads`` is the actor's thread count.
    """

    def __init__(self, settings: Settings) -> None:
        set_thread_budget(settings.intra_op_threads)
        self.pipeline = Pipeline(settings=settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Analyse a batch of rows ``{"task": pickled FrameTask}`` into ``{"outcome": pickled FrameOutcome}``."""
        outcomes = [analyze_frame(self.pipeline, pickle.loads(raw)) for raw in batch["task"]]
        return {"outcome": np.array([pickle.dumps(o) for o in outcomes], dtype=object)}


class RayEngine:
    """Ray Data with one stateful detector per actor.

    Args:
        settings: the library settings; ``intra_op_threads`` is each actor's thread count.
        workers: the number of actors.
        address: an existing cluster's address; None starts a local Ray instance.
        batch_size: frames per ``map_batches`` call.
    """

    def __init__(self, settings: Settings, *, workers: int, address: str | None, batch_size: int) -> None:
        if workers < 1 or batch_size < 1:
            raise ValueError("the Ray engine needs at least one actor and a batch size of at least 1")
        self.settings = settings
        self.workers = workers
        self.address = address
        self.batch_size = batch_size

    def describe(self) -> str:
        """``ray (where): N actors x T threads, batches of B``."""
        where = self.address or "local instance"
        return (
            f"ray engine ({where}), {self.workers} actors x {self.settings.intra_op_threads} onnxruntime threads, "
            f"batches of {self.batch_size}"
        )

    def start(self) -> None:
        """Load the model once here, so that one the actors could not load fails with its own message.

        Ray itself starts (or connects) only when there are frames to send.
        """
        Detector.from_settings(self.settings.model_copy(update={"intra_op_threads": 1}))

    def close(self) -> None:
        """Nothing to stop: :meth:`run` shuts down the Ray instance it started."""

    def run(self, tasks: Iterable[FrameTask]) -> Iterator[FrameOutcome]:
        """Analyse the tasks on Ray; outcomes come back in task order."""
        import ray

        rows = [{"task": pickle.dumps(task)} for task in tasks]
        if not rows:
            return
        started = not ray.is_initialized()
        if started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                options["num_cpus"] = self.workers * self.settings.intra_op_threads
            ray.init(address=self.address, **options)
        try:
            yield from self._run(rows)
        finally:
            if started:  # a Ray instance the caller started stays up
                ray.shutdown()

    def _run(self, rows: list[dict[str, bytes]]) -> Iterator[FrameOutcome]:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        dataset = ray.data.from_items(rows).map_batches(
            DetectorActor,
            fn_constructor_kwargs={"settings": self.settings},
            concurrency=self.workers,
            num_cpus=self.settings.intra_op_threads,
            batch_size=self.batch_size,
            batch_format="numpy",
        )
        for row in dataset.iter_rows():
            yield pickle.loads(row["outcome"])
