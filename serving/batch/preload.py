"""What the workers' fork server imports before it forks them (see :mod:`serving.batch.forkserver`).

Imported by the fork server alone, never by the job: the analysis and the library, once for all the
workers, and a quick exit. The server ends when the job's process does; a normal interpreter exit
would then spend about a tenth of a second tearing numpy, onnxruntime and OpenCV down, with the job's
stderr (which the server shares) still open, so that whoever reads the job's output waits for it too.
The server holds nothing to save: it flushes its standard streams and leaves.
"""

from __future__ import annotations

import atexit
import os
import sys

import serving.batch.frames  # noqa: F401  (the analysis and the photo store)
import vipare.pipeline  # noqa: F401  (the detector: numpy, onnxruntime, OpenCV, Pillow)

__all__: list[str] = []


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(0)


atexit.register(_exit_now)  # run first: handlers run last-registered first
