"""Reviewed photos as a YOLO dataset: what managers said is in the city's photos, ready to fine-tune on.

An export is a folder (``vipare dataset export OUT``) or a zip (``POST /v1/datasets/export``)::

    data.yaml                              the split folders and the class names, in the model's order
    manifest.json                          one entry per photo, the filters used, the dataset hash
    images/{train,val,test}/report-<id>.<ext>   the photo as stored (EXIF GPS removed, bytes otherwise as uploaded)
    labels/{train,val,test}/report-<id>.txt     one ``class cx cy w h`` line per box; empty: no deposit

**Which photos.** Each report with a review, labelled by its current review (the latest row; the
model's detections stay out of it). With ``include_unreviewed``, reports nobody reviewed come too,
labelled by the model's detections and marked ``"labels": "model"`` in the manifest, except the photos
an agent sent anyway where the model saw nothing (only a review settles who is right). A review that
says "no deposit" (a false alarm, or a photo of a rejected incident) gives an empty label file: a
negative. Filters: observed time (``since``/``until``, inclusive) and a bounding box. A photo sent by
several clients (one sha256, several reports) appears once, labelled by its most recent review.

**Labels.** Boxes are ``xyxy`` in pixels of the upright photo; a label line is normalised by the
upright size (``Report.image`` width and height). Ultralytics reads the stored file with OpenCV or
Pillow, which both apply the EXIF orientation, so the lines fit the pixels it trains on. Class ids
are the positions in :func:`vipare.taxonomy.class_names`; a box of another class is left out and
counted in the manifest (``dropped_boxes``).

**Splits by place and time.** Photos of one place look alike, so a split by photo would put
near-copies of the same deposit in train and val. Photos are grouped first: the photos of one
incident (or of a chain of incidents that recurred at one place) form one group; photos without an
incident form one group per ~100 m cell and ISO week of observation. A group's split comes from a
hash of its key (``u`` in [0, 1): ``test`` below ``test_fraction``, ``val`` below
``test_fraction + val_fraction``, else ``train``), so a group keeps its split from one export to the
next, whatever else was reviewed meanwhile. With few groups the hash may leave a requested split
empty; then the groups are taken in the same ``u`` order and counted so that train, then val, then
test hold at least one group each when there are enough (the ``u`` order is kept, so a group never
lands in a split "above" one with a larger ``u``).

**The dataset hash** is the sha256 over the sorted ``(relative path, file sha256)`` pairs of the
images and labels, and of the class names (``names``, the sha256 of their JSON list): the same photos,
labels and splits give the same hash whatever the folder, the time or the zip; a new review changes
it. :func:`folder_hash` recomputes it from a folder on disk.

**Writing.** A folder export is written under a hidden temporary name next to ``OUT``
(``.OUT.tmp-<random>``), each file synced, then renamed to ``OUT`` in one step: an interrupted export
leaves that temporary folder, never an ``OUT`` that looks complete. ``OUT`` must be missing or empty
unless ``force`` (then the previous export is replaced, after the new one is complete). Its
``data.yaml`` names the folder's absolute ``path``, as :mod:`training.datasets` does; a zip's has no
``path``, and Ultralytics then reads the split folders next to the ``data.yaml`` wherever it is
unzipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import yaml
from sqlalchemy import Select, and_, func, not_, or_, select
from sqlalchemy.orm import Session

from serving.errors import NotFoundError
from serving.incidents import lat_lon_box
from serving.models import Incident, Report, ReportReview, utcnow
from serving.photos.store import PhotoStore, fsync_path
from serving.queries import Bbox
from vipare.geotag import EARTH_RADIUS_M
from vipare.size import Size
from vipare.taxonomy import TAXONOMY_VERSION, class_names

__all__ = [
    "CELL_M",
    "MANIFEST_VERSION",
    "SPLITS",
    "Split",
    "ExportFilter",
    "ExportSummary",
    "LabelBox",
    "NothingToExportError",
    "OutputExistsError",
    "Sample",
    "SplitFractions",
    "ZIP_FOLDER",
    "assign_splits",
    "dataset_hash",
    "export_folder",
    "export_zip",
    "folder_hash",
    "group_key",
    "label_line",
    "select_samples",
]

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
MANIFEST_VERSION = 1
ZIP_FOLDER = "vipare-dataset"
"""The top folder of an exported zip."""
CELL_M = 100.0
"""Side of the place cells that group photos without an incident, in metres."""

_IMAGES, _LABELS = "images", "labels"
_METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180.0
_WHAT_TO_DO = (
    "Review photos first: in the manager page (/manager), or with POST /v1/reports/{id}/review; "
    "or export the model's own detections of unreviewed photos too (--include-unreviewed, "
    "include_unreviewed=true)."
)


class NothingToExportError(NotFoundError):
    """No photo matches: nothing was written. The message says what to do."""

    code = "nothing_to_export"


class OutputExistsError(Exception):
    """The output folder exists and holds files, and replacing it was not asked for."""


@dataclass(frozen=True)
class ExportFilter:
    """Which reports an export takes.

    Attributes:
        since: observed at or after this time (timezone-aware), or None.
        until: observed at or before this time, or None.
        bbox: inside this box (``min_lon > max_lon`` crosses the antimeridian), or None.
        include_unreviewed: also the reports nobody reviewed, labelled by the model's detections.
    """

    since: datetime | None = None
    until: datetime | None = None
    bbox: Bbox | None = None
    include_unreviewed: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (give a UTC offset)")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since is after until: nothing could match")

    def as_json(self) -> dict[str, Any]:
        """The filters as the manifest records them."""
        box = self.bbox
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "bbox": None if box is None else [box.min_lon, box.min_lat, box.max_lon, box.max_lat],
            "include_unreviewed": self.include_unreviewed,
        }


@dataclass(frozen=True)
class SplitFractions:
    """Shares of the groups (incidents, place-and-week cells) that go to val and test; the rest is train.

    The default keeps no test split: a city's first reviews are few, and the fine-tuning step judges
    a new model on val, which no training step sees. Ask for a test share when there are enough
    groups to spare some that no decision looks at.
    """

    val: float = 0.2
    test: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.val < 1.0 and 0.0 <= self.test < 1.0 and self.val + self.test < 1.0):
            raise ValueError(
                f"val ({self.val}) and test ({self.test}) fractions must each be in [0, 1) and leave some for "
                "train (val + test < 1)"
            )


@dataclass(frozen=True)
class LabelBox:
    """One box to write: its class and where it is.

    Attributes:
        label: class name (a project class is written, another is dropped).
        xyxy: x1, y1, x2, y2 in pixels of the upright photo.
    """

    label: str
    xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One photo of an export, with its labels and what the manifest says about it.

    Attributes:
        report_id: the report (the lowest id among reports of the same photo with the chosen labels).
        sha256: the photo's identity (sha256 of the uploaded file, the store's file name).
        photo_ext: the stored file's extension.
        size: the upright photo's size, the pixels the boxes are in.
        lat: latitude, decimal degrees.
        lon: longitude, decimal degrees.
        observed_at: when the photo was taken (or received), UTC.
        incident_id: the incident it joined, or None.
        model_sha256: the model that analysed it.
        labels: ``review`` (a manager's review) or ``model`` (the model's detections, never reviewed).
        boxes: what to write in the label file; empty: a photo without deposit.
        deposit: the review's (or the model's) verdict.
        reviewer: who reviewed it, or None.
        reviewed_at: when, or None.
        review_source: ``review`` or ``rejection`` (its incident was rejected), or None.
        same_photo: other reports of the same photo, left out of the export.
    """

    report_id: int
    sha256: str
    photo_ext: str
    size: Size
    lat: float
    lon: float
    observed_at: datetime
    incident_id: int | None
    model_sha256: str
    labels: Literal["review", "model"]
    boxes: tuple[LabelBox, ...]
    deposit: bool
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    review_source: str | None = None
    same_photo: tuple[int, ...] = ()

    @property
    def stem(self) -> str:
        """The file name of its image and label, without extension."""
        return f"report-{self.report_id}"


@dataclass
class ExportSummary:
    """What an export wrote.

    Attributes:
        dataset_hash: see the module doc.
        images: photos per split.
        boxes: label lines per class name.
        labels: photos per label origin (``review``, ``model``).
        negatives: photos with an empty label file.
        dropped_boxes: boxes left out, per reason.
        warnings: what the caller should know (an empty val split...).
        manifest: the manifest as written.
    """

    dataset_hash: str
    images: dict[str, int]
    boxes: dict[str, int]
    labels: dict[str, int]
    negatives: int
    dropped_boxes: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Selection


def _statement(flt: ExportFilter) -> Select[Report, ReportReview]:  # the review is None for unreviewed reports
    latest = (
        select(ReportReview.report_id, func.max(ReportReview.id).label("review_id"))
        .group_by(ReportReview.report_id)
        .subquery()
    )
    statement = (
        select(Report, ReportReview)
        .outerjoin(latest, latest.c.report_id == Report.id)
        .outerjoin(ReportReview, ReportReview.id == latest.c.review_id)
        .order_by(Report.id)
    )
    if not flt.include_unreviewed:
        statement = statement.where(latest.c.review_id.is_not(None))
    else:
        # A photo sent anyway where the model saw nothing: agent and model disagree, only a review settles it.
        disputed = and_(Report.agent_says_deposit.is_(True), Report.dumping.is_(False))
        statement = statement.where(or_(latest.c.review_id.is_not(None), not_(disputed)))
    if flt.since is not None:
        statement = statement.where(Report.observed_at >= flt.since)
    if flt.until is not None:
        statement = statement.where(Report.observed_at <= flt.until)
    if flt.bbox is not None:
        b = flt.bbox
        statement = statement.where(lat_lon_box(Report.lat, Report.lon, b.min_lon, b.min_lat, b.max_lon, b.max_lat))
    return statement


def _sample(report: Report, review: ReportReview | None) -> Sample:
    size = Size(int(report.image["width"]), int(report.image["height"]))
    common: dict[str, Any] = {
        "report_id": report.id,
        "sha256": report.sha256,
        "photo_ext": report.photo_ext,
        "size": size,
        "lat": report.lat,
        "lon": report.lon,
        "observed_at": report.observed_at,
        "incident_id": report.incident_id,
        "model_sha256": report.model_sha256,
    }
    if review is None:
        boxes = tuple(LabelBox(str(d["label"]), _xyxy(d["box"])) for d in report.detections)
        return Sample(**common, labels="model", boxes=boxes, deposit=report.dumping)
    return Sample(
        **common,
        labels="review",
        boxes=tuple(LabelBox(str(b["label"]), _xyxy(b["xyxy"])) for b in review.boxes),
        deposit=review.deposit,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
        review_source=review.source,
    )


def _xyxy(values: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _preference(sample: Sample) -> tuple[bool, datetime, int]:
    # Among reports of one photo: a review beats the model, a later review an earlier one, then the first report.
    reviewed_at = sample.reviewed_at or sample.observed_at
    return (sample.labels == "review", reviewed_at, -sample.report_id)


def select_samples(session: Session, flt: ExportFilter) -> list[Sample]:
    """The photos an export takes, in report order, one per photo (sha256).

    Args:
        session: a read session; the export reads one snapshot of the database through it.
        flt: which reports.

    Returns:
        One sample per distinct photo; the other reports of the same photo are in ``same_photo``.
    """
    by_photo: dict[str, list[Sample]] = {}
    for report, review in session.execute(_statement(flt)):
        by_photo.setdefault(report.sha256, []).append(_sample(report, review))
    chosen: list[Sample] = []
    for samples in by_photo.values():
        best = max(samples, key=_preference)
        others = tuple(sorted(s.report_id for s in samples if s is not best))
        chosen.append(replace(best, same_photo=others) if others else best)
    return sorted(chosen, key=lambda s: s.report_id)


def _incident_roots(session: Session, incident_ids: Iterable[int]) -> dict[int, int]:
    """Each incident's first ancestor along ``recurrence_of``: a deposit that came back at one place."""
    parent: dict[int, int | None] = {}
    todo = set(incident_ids)
    while todo:
        rows = session.execute(select(Incident.id, Incident.recurrence_of_id).where(Incident.id.in_(sorted(todo))))
        todo = set()
        for incident_id, recurrence_of in rows:
            parent[incident_id] = recurrence_of
            if recurrence_of is not None and recurrence_of not in parent:
                todo.add(recurrence_of)
    roots: dict[int, int] = {}
    for start in parent:
        node, seen = start, {start}
        while (up := parent.get(node)) is not None and up not in seen:
            node = up
            seen.add(node)
        roots[start] = node
    return roots


# --------------------------------------------------------------------------------------------------
# Splits


def group_key(sample: Sample, incident_root: int | None = None) -> str:
    """The group a photo is split with: its incident (the root of a recurrence chain), else place and week.

    Args:
        sample: the photo.
        incident_root: the first incident of the chain of recurrences ``sample.incident_id`` belongs to;
            None: the incident itself.

    Returns:
        ``incident:<id>``, or ``cell:<row>:<column>:<ISO year>-W<week>`` for a photo without an incident
        (cells of :data:`CELL_M` metres: rows along the meridian, columns along the cell row's parallel).
    """
    if sample.incident_id is not None:
        return f"incident:{incident_root if incident_root is not None else sample.incident_id}"
    row = math.floor(sample.lat * _METRES_PER_DEGREE / CELL_M)
    row_lat = (row + 0.5) * CELL_M / _METRES_PER_DEGREE
    metres_per_lon_degree = max(_METRES_PER_DEGREE * math.cos(math.radians(row_lat)), 1e-6)
    column = math.floor(sample.lon * metres_per_lon_degree / CELL_M)
    year, week, _ = sample.observed_at.isocalendar()
    return f"cell:{row}:{column}:{year}-W{week:02d}"


def _unit(key: str) -> float:
    digest = hashlib.sha256(f"vipare-split:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(keys: Iterable[str], fractions: SplitFractions) -> dict[str, Split]:
    """The split of each group, from a hash of its key (see the module doc).

    Args:
        keys: group keys (:func:`group_key`); repeats count once.
        fractions: the val and test shares.

    Returns:
        ``{key: "train" | "val" | "test"}``.
    """
    ranked = sorted(set(keys), key=lambda k: (_unit(k), k))
    n = len(ranked)
    units = [_unit(k) for k in ranked]
    n_test = sum(u < fractions.test for u in units)
    n_val = sum(fractions.test <= u < fractions.test + fractions.val for u in units)
    # Hash shares on few groups can leave a split empty: then count instead, train first, then val, then test.
    if fractions.val > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if fractions.test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n and n_test + n_val > n - 1:
        if n_val > n_test or (n_val == n_test and n_val > 1):
            n_val -= 1
        else:
            n_test -= 1
    splits: dict[str, Split] = {}
    for rank, key in enumerate(ranked):
        splits[key] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


# --------------------------------------------------------------------------------------------------
# Labels and the hash


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
    for top in (_IMAGES, _LABELS):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and (top == _IMAGES or path.suffix == ".txt"):
                files[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    ordered = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return dataset_hash(files, ordered)


# --------------------------------------------------------------------------------------------------
# Writing


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
        raise NothingToExportError(_nothing_message(session, flt))
    roots = _incident_roots(session, {s.incident_id for s in samples if s.incident_id is not None})
    groups = {
        s.report_id: group_key(s, None if s.incident_id is None else roots.get(s.incident_id)) for s in samples
    }
    return _Plan(samples=samples, groups=groups, splits=assign_splits(groups.values(), fractions))


def _nothing_message(session: Session, flt: ExportFilter) -> str:
    reviewed = session.scalar(select(func.count(func.distinct(ReportReview.report_id)))) or 0
    if flt.include_unreviewed:
        return "No report matches the filters: widen them (since, until, bbox)."
    if reviewed == 0:
        return f"No photo has been reviewed yet, so there is nothing to export. {_WHAT_TO_DO}"
    return (
        f"None of the {reviewed} reviewed photos matches the filters: widen them (since, until, bbox). {_WHAT_TO_DO}"
    )


def _write(
    plan: _Plan,
    photos: PhotoStore,
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
    entries: list[dict[str, Any]] = []
    for sample in plan.samples:
        group = plan.groups[sample.report_id]
        split = plan.splits[group]
        source = photos.path(sample.sha256, sample.photo_ext)
        try:
            photo = source.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the photo of report {sample.report_id} is missing from the photo store ({source}); "
                "check the data folder (VIPARE_DATA_DIR) is the service's"
            ) from None
        image_path = f"{_IMAGES}/{split}/{sample.stem}.{sample.photo_ext}"
        label_path = f"{_LABELS}/{split}/{sample.stem}.txt"
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
    digest = dataset_hash(files, names)
    counts: dict[str, int] = {s: images.get(s, 0) for s in SPLITS}
    warnings = _warnings(counts, fractions, len(plan.splits))
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
        "warnings": warnings,
        "images": entries,
    }
    sink.write("data.yaml", _data_yaml(path, counts, names, digest).encode(), compress=True)
    sink.write("manifest.json", (json.dumps(manifest, indent=2) + "\n").encode(), compress=True)
    return ExportSummary(
        dataset_hash=digest,
        images=counts,
        boxes=manifest["boxes"],
        labels=dict(origins),
        negatives=negatives,
        dropped_boxes=dict(dropped),
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


def _data_yaml(path: str | None, counts: Mapping[str, int], names: Sequence[str], digest: str) -> str:
    data: dict[str, Any] = {} if path is None else {"path": path}
    data.update({"train": f"{_IMAGES}/train", "val": f"{_IMAGES}/val"})
    if counts["test"]:
        data["test"] = f"{_IMAGES}/test"
    data["names"] = dict(enumerate(names))
    where = (
        "path: the folder this export was written to (move it and path must follow)"
        if path is not None
        else "no path: Ultralytics reads the split folders next to this file"
    )
    header = f"# vipare dataset {digest}\n# {where}; photos and labels listed in manifest.json\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _check_output(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; give a folder to write the dataset into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} is not empty; give a new folder, or --force to replace what it holds")


def export_folder(
    session: Session,
    photos: PhotoStore,
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
        NothingToExportError: no photo matches; nothing written.
        OutputExistsError: ``out`` holds files and ``force`` is False; nothing written.
        FileNotFoundError: a report's photo is missing from the store; nothing written.
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
    photos: PhotoStore,
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
        NothingToExportError: no photo matches; ``target`` not written.
        FileNotFoundError: a report's photo is missing from the store.
    """
    flt, fractions = flt or ExportFilter(), fractions or SplitFractions()
    plan = _plan(session, flt, fractions)
    with zipfile.ZipFile(target, "w") as archive:
        return _write(plan, photos, _ZipSink(archive, ZIP_FOLDER), fractions=fractions, flt=flt, path=None)
