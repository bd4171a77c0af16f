"""The photo store: see :mod:`serving.photos.store`."""

from serving.photos.store import EXTENSIONS, MEDIA_TYPES, PhotoStore, WorkerLock, render_annotated, strip_gps

__all__ = ["EXTENSIONS", "MEDIA_TYPES", "PhotoStore", "WorkerLock", "render_annotated", "strip_gps"]
