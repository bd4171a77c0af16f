"""Which photo store the settings name, in a form that travels to a batch job's worker processes.

``VIPARE_PHOTO_STORE=s3://bucket/prefix`` names a bucket (:mod:`serving.photos.s3`, the ``[s3]``
extra); unset, the photos are in the folder ``photos/`` under ``VIPARE_DATA_DIR``
(:mod:`serving.photos.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.config import S3_SCHEME, ServiceSettings, UnsafeConfigurationError
from serving.photos.backend import PhotoBackend
from serving.photos.store import PhotoStore

__all__ = ["PhotoLocation", "open_photos", "photo_location"]


@dataclass(frozen=True, slots=True)
class PhotoLocation:
    """Where a photo store is, in a form a worker process receives and opens on its side.

    Attributes:
        url: a folder, or ``s3://bucket/prefix``.
        endpoint_url: the S3 API's URL, for a store other than AWS; None for AWS or a folder.
    """

    url: str
    endpoint_url: str | None = None

    def open(self) -> PhotoBackend:
        """Open the store (a folder is created when missing).

        Raises:
            UnsafeConfigurationError: an S3 store without the ``[s3]`` extra installed.
        """
        if not self.url.startswith(S3_SCHEME):
            return PhotoStore(Path(self.url))
        try:  # boto3: only where a bucket is named
            from serving.photos.s3 import S3PhotoStore
        except ImportError as exc:
            raise UnsafeConfigurationError(
                f"VIPARE_PHOTO_STORE names an S3 bucket ({self.url}) but boto3 is not installed: "
                "install the [s3] extra (pip install 'vipare[s3]'), or unset VIPARE_PHOTO_STORE to keep photos "
                "under the data folder."
            ) from exc
        return S3PhotoStore.from_url(self.url, endpoint_url=self.endpoint_url)

    def __str__(self) -> str:
        return self.url


def photo_location(settings: ServiceSettings) -> PhotoLocation:
    """The store ``photo_store`` names (``s3://...``), else the folder ``photo_dir``."""
    if settings.photo_store:
        return PhotoLocation(settings.photo_store, settings.s3_endpoint_url)
    return PhotoLocation(str(settings.photo_dir))


def open_photos(settings: ServiceSettings) -> PhotoBackend:
    """Open the photo store the settings name (see :func:`photo_location`)."""
    return photo_location(settings).open()
