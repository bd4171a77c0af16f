"""Which photo store the settings name, in a form that travels to a batch job's worker processes.

The photos are in the folder ``photos/`` under ``VIPARE_DATA_DIR`` (:mod:`serving.photos.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.config import ServiceSettings
from serving.photos.backend import PhotoBackend
from serving.photos.store import PhotoStore

__all__ = ["PhotoLocation", "open_photos", "photo_location"]


@dataclass(frozen=True, slots=True)
class PhotoLocation:
    """Where a photo store is, in a form a worker process receives and opens on its side.

    Attributes:
        url: the store's folder.
    """

    url: str

    def open(self) -> PhotoBackend:
        """Open the store (a folder is created when missing)."""
        return PhotoStore(Path(self.url))

    def __str__(self) -> str:
        return self.url


def photo_location(settings: ServiceSettings) -> PhotoLocation:
    """The folder ``photo_dir``."""
    return PhotoLocation(str(settings.photo_dir))


def open_photos(settings: ServiceSettings) -> PhotoBackend:
    """Open the photo store the settings name (see :func:`photo_location`)."""
    return photo_location(settings).open()
