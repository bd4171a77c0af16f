"""The files of an export, what a label line and ``data.yaml`` hold, and the dataset hash.

An export (a folder, or a zip under one top folder) holds::

    data.yaml                              the split folders and the class names, in the model's order
    manifest.json                          one entry per photo, the filters used, the dataset hash
    images/{train,val,test}/report-<id>.<ext>   the photo as stored (as uploaded, metadata removed)
    labels/{train,val,test}/report-<id>.txt     one ``class cx cy w h`` line per box; empty: no deposit

**Labels.** Boxes are ``xyxy`` in pixels of the upright photo; a label line is normalised by the
upright size (``Report.image`` width and height). Ultralytics reads the stored file with OpenCV or
Pillow, which both apply the EXIF orientation, so the lines fit the pixels it trains on. Class ids
are the positions in :func:`vipare.taxonomy.class_names`; a box of another class is left out and
counted in the manifest (``dropped_boxes``).

**The dataset hash** is the sha256 over the sorted ``(relative path, file sha256)`` pairs of the
images and labels, and of the class names (``names``, the sha256 of their JSON list): the same photos,
labels and splits give the same hash whatever the folder, the time or the zip; a new review changes
it. :func:`folder_hash` recomputes it from a folder on disk.

A folder export's ``data.yaml`` names the folder's absolute ``path``, as :mod:`training.datasets`
does; a zip's has no ``path``, and Ultralytics then reads the split folders next to the ``data.yaml``
wherever it is unzipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vipare.size import Size

__all__ = [
    "IMAGES",
    "LABELS",
    "data_yaml",
    "dataset_hash",
    "folder_hash",
    "label_line",
]

IMAGES, LABELS = "images", "labels"
"""The top folders of the photos and of their label files."""


def label_line(class_id: int, xyxy: tuple[float, float, float, float], size: Size) -> str | None:
    """One YOLO label line, ``class cx cy w h`` normalised to [0, 1], for a box in pixels.

    Args:
        class_id: position of the class in the model's class list.
        xyxy: x1, y1, x2, y2 in pixels of the upright photo; clipped to the photo.
        size: the upright photo's size.

    Returns:
        The line (6 decimals, no newline), or None for a box with no area inside the photo.
    """
    x1, x2 = (min(max(v, 0.0), float(size.width)) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (min(max(v, 0.0), float(size.height)) for v in (xyxy[1], xyxy[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    cx, cy = (x1 + x2) / 2 / size.width, (y1 + y2) / 2 / size.height
    w, h = (x2 - x1) / size.width, (y2 - y1) / size.height
    return f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _names_digest(names: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()


def dataset_hash(files: Mapping[str, str], names: Sequence[str]) -> str:
    """The dataset hash: sha256 over the sorted ``(path, sha256)`` pairs of the files, and of the class names.

    Args:
        files: ``{relative posix path: hex sha256 of its bytes}`` of every image and label file.
        names: class names in the model's order.
    """
    pairs = sorted({**files, "names": _names_digest(names)}.items())
    return hashlib.sha256("".join(f"{path}\t{digest}\n" for path, digest in pairs).encode()).hexdigest()


def folder_hash(root: Path) -> str:
    """The dataset hash of an export on disk (its ``images/`` and ``labels/*.txt`` files, its ``data.yaml`` names).

    Files Ultralytics adds (``labels/*.cache``) do not count, so training on a folder leaves its hash as it was.
    """
    files: dict[str, str] = {}
    for top in (IMAGES, LABELS):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and (top == IMAGES or path.suffix == ".txt"):
                files[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    ordered = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return dataset_hash(files, ordered)


def data_yaml(path: str | None, counts: Mapping[str, int], names: Sequence[str], digest: str) -> str:
    """The text of an export's ``data.yaml``.

    Args:
        path: the folder's absolute path, or None for a zip (the split folders are then next to the file).
        counts: photos per split; a ``test`` entry appears only when the test split holds photos.
        names: class names in the model's order.
        digest: the dataset hash, written in the header comment.
    """
    data: dict[str, Any] = {} if path is None else {"path": path}
    data.update({"train": f"{IMAGES}/train", "val": f"{IMAGES}/val"})
    if counts["test"]:
        data["test"] = f"{IMAGES}/test"
    data["names"] = dict(enumerate(names))
    where = (
        "path: the folder this export was written to (move it and path must follow)"
        if path is not None
        else "no path: Ultralytics reads the split folders next to this file"
    )
    header = f"# vipare dataset {digest}\n# {where}; photos and labels listed in manifest.json\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
