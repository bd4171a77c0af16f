"""Batch jobs: folders of street-camera frames to incidents, resumable, in parallel, or on Ray.

``vipare batch SOURCE`` (:mod:`serving.batch.cli`) writes to the service's own store through the
service's own report path (:func:`serving.reports.store.store_reports`), or to JSON lines.

=====================  ================================================================
module                 what
=====================  ================================================================
``sources``            SOURCE (folder, zip, glob) -> frames, each with its camera (frames.csv,
                       folder per camera, ``--camera``)
``times``              the capture time in a file name; naive times in a zone
``frames``             one frame's analysis, as a worker runs it (no database here)
``engines``            the local process pool; ``ray_engine``: Ray Data actors
``sinks``              the store or JSON lines: what is written, what an earlier run wrote
``job``                the loop: skip, dispatch, gather in order, write in small transactions
``progress``           progress bar or log lines, and the summary
=====================  ================================================================

This package imports nothing at import time, so that :mod:`serving.batch.times` stays cheap to use.
"""
