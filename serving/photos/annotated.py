"""The annotated photo, rendered once per stored file and detections, then read from a cache folder.

Rendering decodes the stored photo (a whole PNG, WebP or HEIC, or a reduced JPEG) and draws on it:
seconds and hundreds of megabytes for a large picture, too much for every ``GET .../image/annotated``.
The JPEG is kept under ``<data_dir>/cache/annotated/<ab>/<sha256>/<key>.jpg``; the key hashes what the
drawing depends on: the stored copy's version (:meth:`serving.photos.backend.PhotoBackend.version`: a
file's name, size, modification time and inode, an object's ETag and time of writing, so a copy
rewritten in any way, re-encoded or blurred again, gets a new key), the detections and the size.
The cache stays on each host, also when the photos are in a bucket several hosts share.
Nothing is ever invalidated: a changed input is a new key. :func:`forget_annotated` deletes a photo's
entries (when its photo is erased or expires).

A cache that cannot be written (a full or read-only disk) only costs the next request a new
rendering: the drawing is still answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from vipare.results import Detection

__all__ = ["ANNOTATED_CACHE", "cache_key", "cached_annotated", "forget_annotated", "keep_annotated"]

ANNOTATED_CACHE = Path("cache") / "annotated"
"""The cache folder, relative to ``data_dir``."""

_FORMAT = 1  # bump when the drawing changes, so entries drawn the old way are not served
_TMP_PREFIX = ".tmp-"

logger = logging.getLogger("serving.photos.annotated")


def cache_key(version: str, detections: Sequence[Detection], max_side: int) -> str:
    """What the drawing of the stored copy ``version`` with ``detections`` depends on, hashed (hex)."""
    facts = {
        "format": _FORMAT,
        "file": version,
        "detections": [d.model_dump(mode="json") for d in detections],
        "max_side": max_side,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def _entry(root: Path, sha256: str, key: str) -> Path:
    return root / sha256[:2] / sha256 / f"{key}.jpg"


def cached_annotated(
    root: Path, sha256: str, version: str, detections: Sequence[Detection], *, max_side: int
) -> tuple[Path, bytes | None]:
    """Where the drawing of a stored photo is cached, and its bytes when it already is.

    Args:
        root: the cache folder (:data:`ANNOTATED_CACHE` under ``data_dir``).
        sha256: the photo's sha256 (its entries' folder).
        version: the version of the stored copy the drawing is made from.
        detections: the boxes drawn.
        max_side: the longest side of the drawing, pixels.

    Returns:
        The entry's path (for :func:`keep_annotated` after a miss), and the JPEG's bytes or None.
    """
    entry = root / sha256[:2] / sha256 / f"{cache_key(version, detections, max_side)}.jpg"
    try:
        return entry, entry.read_bytes()
    except FileNotFoundError:
        return entry, None


def keep_annotated(entry: Path, jpeg: bytes) -> None:
    """Store a drawing at ``entry`` (from :func:`cached_annotated`); a failure to write is only logged."""
    try:
        _write(entry, jpeg)
    except OSError as exc:  # the drawing is still good; only the next request pays for it again
        logger.warning("could not cache the annotated photo %s: %s", entry.parent.name, exc)


def _write(entry: Path, data: bytes) -> None:
    entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = entry.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, entry)  # readers see a whole file or none; no fsync: a lost entry is drawn again
    finally:
        tmp.unlink(missing_ok=True)


def forget_annotated(root: Path, sha256: str) -> None:
    """Delete every cached drawing of the photo ``sha256`` (its photo was erased or expired)."""
    shutil.rmtree(root / sha256[:2] / sha256, ignore_errors=True)
