"""Writing an export: the files, the manifest, a folder that appears complete or not at all, or a zip.

The photos come from :mod:`serving.dataset.select`, their splits from :mod:`serving.dataset.splits`,
the label lines, ``data.yaml`` and the dataset hash from :mod:`serving.dataset.layout`.

A folder export is written under a hidden temporary name next to ``OUT`` (``.OUT.tmp-<random>``),
each file synced, then renamed to ``OUT`` in one step: an interrupted export leaves that temporary
folder, never an ``OUT`` that looks complete. ``OUT`` must be missing or empty unless ``force`` (then
the previous export is replaced, after the new one is complete). A zip holds the same files under
one top folder, :data:`ZIP_FOLDER`.

A photo gone from the store when it is read (purged or erased since the selection) is left out,
counted in the manifest's ``dropped_photos`` and named in its ``warnings``: the rest is still exported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy.orm import Session

from serving.dataset.layout import IMAGES, LABELS, data_yaml, dataset_hash, label_line
from serving.dataset.select import ExportFilter, NothingToExportError, Sample, nothing_message, select_samples
from serving.dataset.splits import SPLITS, Split, SplitFractions, assign_splits, group_key, incident_roots
from serving.models import utcnow
from serving.photos.backend import PhotoBackend
from serving.photos.store import fsync_path
from vipare.taxonomy import TAXONOMY_VERSION, class_names

__all__ = [
    "MANIFEST_VERSION",
    "ZIP_FOLDER",
    "ExportSummary",
    "OutputExistsError",
    "export_folder",
    "export_zip",
]

MANIFEST_VERSION = 1
ZIP_FOLDER = "vipare-dataset"
"""The top folder of an exported zip."""


class OutputExistsError(Exception):
    """The output folder exists and holds files, and replacing it was not asked for."""


@dataclass
class ExportSummary:
    """What an export wrote.

    Attributes:
        dataset_hash: see :mod:`serving.dataset.layout`.
        images: photos per split.
        boxes: label lines per class name.
        labels: photos per label origin (``review``, ``model``).
        negatives: photos with an empty label file.
        dropped_boxes: boxes left out, per reason.
        dropped_photos: photos left out, per reason (``missing``: purged or erased after the selection).
        warnings: what the caller should know (an empty val split, a photo left out...).
        manifest: the manifest as written.
    """

    dataset_hash: str
    images: dict[str, int]
    boxes: dict[str, int]
    labels: dict[str, int]
    negatives: int
    dropped_boxes: dict[str, int]
    dropped_photos: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


class _Sink(Protocol):
    def write(self, relative: str, data: bytes, *, compress: bool) -> None: ...


class _FolderSink:
    """Files under a folder, each synced before the folder is renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders: set[Path] = {root}

    def write(self, relative: str, data: bytes, *, compress: bool) -> None:
        path = self.root / relative
        if path.parent not in self.folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.folders.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def sync_folders(self) -> None:
        for folder in sorted(self.folders, key=lambda p: len(p.parts), reverse=True):
            fsync_path(folder)


class _ZipSink:
    """Entries of a zip file, under one top folder; photos stored as they are (already compressed)."""

    def __init__(self, archive: zipfile.ZipFile, top: str) -> None:
        self.archive = archive
        self.top = top

    def write(self, relative: str, data: bytes, *, compress: bool) -> None:
        self.archive.writestr(
            f"{self.top}/{relative}", data, compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        )


@dataclass(frozen=True)
class _Plan:
    samples: list[Sample]
    groups: dict[int, str]  # report id -> group key
    splits: dict[str, Split]  # group key -> split


def _plan(session: Session, flt: ExportFilter, fractions: SplitFractions) -> _Plan:
    samples = select_samples(session, flt)
    if not samples:
        raise NothingToExportError(nothing_message(session, flt))
    roots = incident_roots(session, {s.incident_id for s in samples if s.incident_id is not None})
    groups = {s.report_id: group_key(s, None if s.incident_id is None else roots.get(s.incident_id)) for s in samples}
    return _Plan(samples=samples, groups=groups, splits=assign_splits(groups.values(), fractions))


def _write(
    plan: _Plan,
    photos: PhotoBackend,
    sink: _Sink,
    *,
    fractions: SplitFractions,
    flt: ExportFilter,
    path: str | None,
) -> ExportSummary:
    names = class_names()
    class_ids = {name: i for i, name in enumerate(names)}
    files: dict[str, str] = {}
    images: Counter[str] = Counter()
    boxes: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    negatives = 0
    missing: list[int] = []
    entries: list[dict[str, Any]] = []
    for sample in plan.samples:
        group = plan.groups[sample.report_id]
        split = plan.splits[group]
        try:
            photo = photos.read(sample.sha256, sample.photo_ext)
        except FileNotFoundError:  # purged or erased since the selection: one photo less, not a failed export
            missing.append(sample.report_id)
            continue
        image_path = f"{IMAGES}/{split}/{sample.stem}.{sample.photo_ext}"
        label_path = f"{LABELS}/{split}/{sample.stem}.txt"
        lines: list[str] = []
        for box in sample.boxes:
            if box.label not in class_ids:
                dropped["unknown_class"] += 1
                continue
            line = label_line(class_ids[box.label], box.xyxy, sample.size)
            if line is None:
                dropped["no_area"] += 1
                continue
            lines.append(line)
            boxes[box.label] += 1
        label = "".join(f"{line}\n" for line in lines).encode()
        sink.write(image_path, photo, compress=False)
        sink.write(label_path, label, compress=True)
        files[image_path] = hashlib.sha256(photo).hexdigest()
        files[label_path] = hashlib.sha256(label).hexdigest()
        images[split] += 1
        origins[sample.labels] += 1
        negatives += not lines
        entries.append(_entry(sample, image_path, label_path, files[image_path], group, split, len(lines)))
    if not entries:
        raise NothingToExportError(
            f"The {len(missing)} matching photos are missing from the photo store (purged or erased since); "
            "check the data folder (VIPARE_DATA_DIR) is the service's."
        )
    digest = dataset_hash(files, names)
    counts: dict[str, int] = {s: images.get(s, 0) for s in SPLITS}
    warnings = _warnings(counts, fractions, len(plan.splits))
    if missing:
        which = f"report {missing[0]}" if len(missing) == 1 else f"reports {', '.join(map(str, missing))}"
        warnings.append(f"left out the photo of {which}: missing from the photo store (purged or erased meanwhile)")
    dropped_photos = {"missing": len(missing)} if missing else {}
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "dataset_hash": digest,
        "exported_at": utcnow().isoformat(),
        "taxonomy_version": TAXONOMY_VERSION,
        "names": names,
        "filters": flt.as_json(),
        "splits": {
            "val_fraction": fractions.val,
            "test_fraction": fractions.test,
            "groups": dict(Counter(plan.splits.values())),
            "images": counts,
        },
        "labels": dict(origins),
        "boxes": {name: boxes.get(name, 0) for name in names},
        "negatives": negatives,
        "dropped_boxes": dict(dropped),
        "dropped_photos": dropped_photos,
        "warnings": warnings,
        "images": entries,
    }
    sink.write("data.yaml", data_yaml(path, counts, names, digest).encode(), compress=True)
    sink.write("manifest.json", (json.dumps(manifest, indent=2) + "\n").encode(), compress=True)
    return ExportSummary(
        dataset_hash=digest,
        images=counts,
        boxes=manifest["boxes"],
        labels=dict(origins),
        negatives=negatives,
        dropped_boxes=dict(dropped),
        dropped_photos=dropped_photos,
        warnings=warnings,
        manifest=manifest,
    )


def _entry(
    sample: Sample, image: str, label: str, file_sha256: str, group: str, split: Split, boxes: int
) -> dict[str, Any]:
    return {
        "image": image,
        "label": label,
        "report_id": sample.report_id,
        "sha256": sample.sha256,
        "file_sha256": file_sha256,
        "width": sample.size.width,
        "height": sample.size.height,
        "lat": round(sample.lat, 7),
        "lon": round(sample.lon, 7),
        "observed_at": sample.observed_at.isoformat(),
        "labels": sample.labels,
        "deposit": sample.deposit,
        "boxes": boxes,
        "reviewer": sample.reviewer,
        "reviewed_at": None if sample.reviewed_at is None else sample.reviewed_at.isoformat(),
        "review_source": sample.review_source,
        "model_sha256": sample.model_sha256,
        "incident_id": sample.incident_id,
        "group": group,
        "split": split,
        "same_photo_reports": list(sample.same_photo),
    }


def _warnings(counts: Mapping[str, int], fractions: SplitFractions, groups: int) -> list[str]:
    warnings: list[str] = []
    if fractions.val > 0 and counts["val"] == 0:
        warnings.append(
            f"the val split is empty: the photos form {groups} group (one place and time), too few to hold one "
            "out; review photos of other places or weeks before training on this export"
        )
    if fractions.test > 0 and counts["test"] == 0:
        warnings.append(f"the test split is empty: the photos form only {groups} groups")
    return warnings


def _check_output(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; give a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} is not empty; give a new folder, or --force to replace what it holds")


def export_folder(
    session: Session,
    photos: PhotoBackend,
    out: Path,
    flt: ExportFilter | None = None,
    fractions: SplitFractions | None = None,
    *,
    force: bool = False,
) -> ExportSummary:
    """Write an export to the folder ``out`` (see the module doc), which appears complete or not at all.

    Args:
        session: a read session on the service's database.
        photos: the service's photo store.
        out: the folder to create; missing or empty unless ``force``.
        flt: which reports (default: every reviewed one).
        fractions: the val and test shares (default: 0.2 and 0).
        force: replace what ``out`` holds, once the new export is complete.

    Returns:
        What was written.

    Raises:
        NothingToExportError: no photo matches, or every one is missing from the store; nothing written.
        OutputExistsError: ``out`` holds files and ``force`` is False; nothing written.
    """
    flt, fractions = flt or ExportFilter(), fractions or SplitFractions()
    out = out.absolute()
    _check_output(out, force=force)
    plan = _plan(session, flt, fractions)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        sink = _FolderSink(tmp)
        summary = _write(plan, photos, sink, fractions=fractions, flt=flt, path=str(out.resolve()))
        sink.sync_folders()
        _check_output(out, force=force)
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    fsync_path(out.parent)
    return summary


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)  # onto a missing or empty folder


def export_zip(
    session: Session,
    photos: PhotoBackend,
    target: Path | IO[bytes],
    flt: ExportFilter | None = None,
    fractions: SplitFractions | None = None,
) -> ExportSummary:
    """Write an export as a zip file, its files under one top folder, :data:`ZIP_FOLDER`.

    Its ``data.yaml`` has no ``path``: Ultralytics then reads the split folders next to it, wherever
    the zip is unpacked.

    Args:
        session: a read session on the service's database.
        photos: the service's photo store.
        target: the zip file to write (replaced), or a binary file open for writing.
        flt: which reports (default: every reviewed one).
        fractions: the val and test shares (default: 0.2 and 0).

    Returns:
        What was written.

    Raises:
        NothingToExportError: no photo matches, or every one is missing from the store.
    """
    flt, fractions = flt or ExportFilter(), fractions or SplitFractions()
    plan = _plan(session, flt, fractions)
    with zipfile.ZipFile(target, "w") as archive:
        return _write(plan, photos, _ZipSink(archive, ZIP_FOLDER), fractions=fractions, flt=flt, path=None)
