"""Import YOLO-format datasets into the project taxonomy and write a run-directory dataset.

Each public dataset names its classes its own way; the mapping to :mod:`vipare.taxonomy` is declared
here, once per source (``SOURCES``). Source classes mapped to ``None`` are dropped. Label lines are
YOLO boxes (``cls cx cy w h``) or YOLO polygons (``cls x1 y1 x2 y2 ...``); polygons become their
bounding boxes. Images are deduplicated by the sha256 of their bytes; an image that is in a
validation split is removed from training splits (no leak).

The written dataset is a folder Ultralytics can train on::

    OUT/images/{train,val}/<source>__<name>   symlinks to the shared images
    OUT/labels/{train,val}/<source>__<stem>.txt
    OUT/data.yaml                             names in taxonomy order
    OUT/dataset.json                          content hash, counts, sources, mapping

Run::

    python -m training.datasets runs/data/swcn --train street-waste-cn:train --val street-waste-cn:val
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import yaml
from click.core import ParameterSource

from training.images import image_files
from training.paths import SHARED_DATASETS
from training.sessions import PARTS, split_parts
from vipare.taxonomy import TAXONOMY_VERSION, class_names

__all__ = [
    "SOURCES",
    "Box",
    "box_from_corners",
    "file_sha256",
    "DatasetInfo",
    "Sample",
    "Source",
    "dataset_hash",
    "import_split",
    "merge_piles",
    "parse_label_text",
    "replay_sample",
    "taxonomy_source",
    "write_dataset",
]

log = logging.getLogger(__name__)

BOX_FIELDS = 5  # cls cx cy w h
MIN_POLYGON_POINTS = 3
HASH_CHUNK_BYTES = 1 << 20
SOURCE_SEPARATOR = "__"
VAL_SPLIT = "val"


@dataclass(frozen=True)
class Source:
    """A YOLO-format dataset on disk and how its classes map to the project taxonomy.

    Attributes:
        name: short identifier used in file names and records.
        root: folder with ``data.yaml``, ``images/<split>`` and ``labels/<split>``.
        mapping: source class name -> project class name, or None to drop the class.
        per_item: the source boxes every item (each bag of a pile) where the taxonomy boxes a pile as one
            deposit; ``--piles`` joins them (:func:`merge_piles`).
    """

    name: str
    root: Path
    mapping: Mapping[str, str | None]
    per_item: bool = False

    def source_names(self) -> dict[int, str]:
        """Class index -> class name, from the source's ``data.yaml``."""
        names = yaml.safe_load((self.root / "data.yaml").read_text())["names"]
        if isinstance(names, list):
            return dict(enumerate(str(n) for n in names))
        return {int(k): str(v) for k, v in names.items()}


SOURCES: dict[str, Source] = {
    "street-waste-cn": Source(
        "street-waste-cn",
        SHARED_DATASETS / "street-waste-cn",
        {"garbage": "dumped_waste", "overflow": "overflowing_bin", "garbage_bin": "bin"},
    ),
    "trash-bags-kr": Source(
        "trash-bags-kr",
        SHARED_DATASETS / "trash-bags-kr",
        {"general_trashbag": "dumped_waste", "other_trashbag": "dumped_waste"},
        per_item=True,
    ),
}


def taxonomy_source(root: Path, name: str | None = None) -> Source:
    """A YOLO dataset already named in the project taxonomy, as a source.

    Such as the reviewed photos ``vipare dataset export`` writes: its classes map to themselves.

    Args:
        root: folder with ``data.yaml``, ``images/<split>`` and ``labels/<split>``.
        name: short identifier used in file names and records; defaults to the folder's name.

    Raises:
        ValueError: when ``data.yaml`` names a class outside the taxonomy.
    """
    source = Source(name or root.name, root, {})
    names = list(source.source_names().values())
    unknown = sorted(set(names) - set(class_names()))
    if unknown:
        raise ValueError(f"{root / 'data.yaml'} names classes outside the taxonomy {class_names()}: {unknown}")
    return Source(source.name, root, {n: n for n in names})


def replay_sample(samples: Sequence[Sample], count: int, seed: int = 0) -> list[Sample]:
    """``count`` samples drawn without replacement, the same ones for the same seed (all when fewer).

    Replaying a sample of the original training photos while fine-tuning on new ones keeps the model
    from forgetting what it learnt on them.
    """
    if count >= len(samples):
        return list(samples)
    chosen = random.Random(seed).sample(range(len(samples)), count)
    return [samples[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class Box:
    """One label box, normalized to the image size.

    Attributes:
        cls: project class index (taxonomy order).
        cx, cy, w, h: centre and size, fractions of image width/height in [0, 1].
    """

    cls: int
    cx: float
    cy: float
    w: float
    h: float

    def line(self) -> str:
        """The YOLO label line of this box."""
        return f"{self.cls} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"


@dataclass(frozen=True)
class Sample:
    """One image and its converted labels.

    Attributes:
        source: source name.
        image: path of the original image.
        sha256: hex digest of the image bytes.
        boxes: labels in the project taxonomy (may be empty: background image).
    """

    source: str
    image: Path
    sha256: str
    boxes: tuple[Box, ...]


@dataclass
class DatasetInfo:
    """What :func:`write_dataset` wrote.

    Attributes:
        root: dataset folder.
        data_yaml: path of its ``data.yaml``.
        data_hash: content hash, see :func:`dataset_hash`.
        images: image count per split.
        boxes: box count per split and class name.
        dropped: counts of what the import left out (duplicates, leaks, unmapped classes).
    """

    root: Path
    data_yaml: Path
    data_hash: str
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def box_from_corners(cls: int, x0: float, y0: float, x1: float, y1: float) -> Box | None:
    """A box from normalized corners, clipped to the image; None when nothing is left."""
    x0, y0, x1, y1 = _clip01(x0), _clip01(y0), _clip01(x1), _clip01(y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


def parse_label_text(text: str, class_map: Mapping[int, int | None]) -> tuple[list[Box], Counter[str]]:
    """Parse one YOLO label file's text (boxes or polygons) into project boxes.

    Args:
        text: file content; lines may or may not end with a newline.
        class_map: source class index -> project class index, or None to drop.

    Returns:
        The boxes, and counts of dropped lines by reason.

    Raises:
        KeyError: for a class index absent from ``class_map`` (an undeclared class).
    """
    boxes: list[Box] = []
    dropped: Counter[str] = Counter()
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        target = class_map[int(float(parts[0]))]
        if target is None:
            dropped["unmapped_class"] += 1
            continue
        values = [float(v) for v in parts[1:]]
        if len(parts) == BOX_FIELDS:
            cx, cy, w, h = values
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) % 2 == 0 and len(values) // 2 >= MIN_POLYGON_POINTS:
            xs, ys = values[0::2], values[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            dropped["malformed_line"] += 1
            continue
        box = box_from_corners(target, x0, y0, x1, y1)
        if box is None:
            dropped["empty_box"] += 1
            continue
        boxes.append(box)
    return boxes, dropped


PILE_GAP = 0.25
"""Two boxes of a class belong to one pile when they overlap once each is grown by this fraction of its own
width and height on every side: bags set out together touch or nearly touch."""


def merge_piles(boxes: Sequence[Box], gap: float = PILE_GAP) -> list[Box]:
    """One box per pile: boxes of a class that touch (within ``gap``, see :data:`PILE_GAP`), directly or
    through others, replaced by the box around them all; other classes' boxes kept as they are.

    street-waste-cn boxes a pile of bags as one deposit, trash-bags-kr every bag: trained on both as
    labelled, a model learns to box a pile both ways, and each way scores as a false alarm against the
    other's labels.
    """
    corners = [(b.cx - b.w / 2, b.cy - b.h / 2, b.cx + b.w / 2, b.cy + b.h / 2) for b in boxes]
    grown = [(x0 - gap * b.w, y0 - gap * b.h, x1 + gap * b.w, y1 + gap * b.h)
             for b, (x0, y0, x1, y1) in zip(boxes, corners, strict=True)]
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(boxes)), 2):
        a, b = grown[i], grown[j]
        if boxes[i].cls == boxes[j].cls and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in sorted(groups.values()):
        if len(members) == 1:
            merged.append(boxes[members[0]])
            continue
        x0, y0, x1, y1 = (f(corners[i][k] for i in members) for k, f in enumerate((min, min, max, max)))
        box = box_from_corners(boxes[members[0]].cls, x0, y0, x1, y1)
        if box is not None:
            merged.append(box)
    return merged


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _class_map(source: Source, project_names: Sequence[str]) -> dict[int, int | None]:
    """Source class index -> project class index; every source class must be declared."""
    out: dict[int, int | None] = {}
    for index, name in source.source_names().items():
        if name not in source.mapping:
            raise KeyError(f"{source.name}: class {name!r} has no declared mapping")
        target = source.mapping[name]
        out[index] = None if target is None else project_names.index(target)
    return out


def import_split(
    source: Source, split: str, project_names: Sequence[str] | None = None
) -> tuple[list[Sample], Counter[str]]:
    """Read one split of a source.

    Args:
        source: the dataset.
        split: folder name under ``images/`` and ``labels/``.
        project_names: class names in model order; defaults to the taxonomy.

    Returns:
        Samples in file-name order, and counts of what was dropped.
    """
    names = list(project_names) if project_names is not None else class_names()
    class_map = _class_map(source, names)
    image_dir, label_dir = source.root / "images" / split, source.root / "labels" / split
    samples: list[Sample] = []
    dropped: Counter[str] = Counter()
    for image in image_files(image_dir):
        label = label_dir / f"{image.stem}.txt"
        # Label files have no trailing newline: read each file on its own, never concatenated.
        text = label.read_text() if label.exists() else ""
        boxes, why = parse_label_text(text, class_map)
        dropped.update(why)
        samples.append(Sample(source.name, image, file_sha256(image), tuple(boxes)))
    return samples, dropped


def _dedupe(splits: Mapping[str, Iterable[Sample]]) -> tuple[dict[str, list[Sample]], Counter[str]]:
    """Drop repeated images: within a split, and in other splits when the image is in ``val``."""
    dropped: Counter[str] = Counter()
    val_hashes = {s.sha256 for s in splits.get(VAL_SPLIT, [])}
    out: dict[str, list[Sample]] = {}
    for split, samples in splits.items():
        seen: set[str] = set()
        kept: list[Sample] = []
        for sample in samples:
            if sample.sha256 in seen:
                dropped["duplicate_image"] += 1
                continue
            if split != VAL_SPLIT and sample.sha256 in val_hashes:
                dropped["image_also_in_val"] += 1
                continue
            seen.add(sample.sha256)
            kept.append(sample)
        out[split] = kept
    return out, dropped


def dataset_hash(splits: Mapping[str, Sequence[Sample]], names: Sequence[str]) -> str:
    """Content hash of a dataset: class names, and per split every image's sha256 and labels.

    Independent of file paths and of the order samples were read in.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"names": list(names), "taxonomy": TAXONOMY_VERSION}).encode())
    for split in sorted(splits):
        rows = sorted(f"{split}\t{s.sha256}\t" + ";".join(b.line() for b in s.boxes) for s in splits[split])
        for row in rows:
            digest.update(row.encode())
            digest.update(b"\n")
    return digest.hexdigest()


def _output_name(sample: Sample) -> str:
    return f"{sample.source}{SOURCE_SEPARATOR}{sample.image.name}"


def write_dataset(
    out: Path,
    splits: Mapping[str, Sequence[Sample]],
    names: Sequence[str] | None = None,
    import_dropped: Mapping[str, int] | None = None,
    specs: Mapping[str, Sequence[str]] | None = None,
    piles: bool = False,
) -> DatasetInfo:
    """Write a run-directory dataset (symlinked images, converted labels, data.yaml).

    Args:
        out: folder to create; files of a previous write are replaced.
        splits: samples per split name (``train``, ``val``...).
        names: class names in model order; defaults to the taxonomy.
        import_dropped: counts of label lines the import dropped, recorded with the dataset.
        specs: the SOURCE:SPLIT specs each split was imported from, recorded with the dataset.
        piles: whether training boxes of per-item sources were joined into piles, recorded with the dataset.

    Returns:
        What was written.
    """
    class_list = list(names) if names is not None else class_names()
    deduped, dropped = _dedupe(splits)
    info = DatasetInfo(root=out.resolve(), data_yaml=out.resolve() / "data.yaml", data_hash="")
    info.data_hash = dataset_hash(deduped, class_list)
    dropped.update(import_dropped or {})
    info.dropped = dict(dropped)
    for split, samples in deduped.items():
        image_dir, label_dir = out / "images" / split, out / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        per_class: Counter[str] = Counter()
        for sample in samples:
            name = _output_name(sample)
            link = image_dir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(sample.image.resolve())
            (label_dir / f"{Path(name).stem}.txt").write_text("".join(f"{b.line()}\n" for b in sample.boxes))
            per_class.update(class_list[b.cls] for b in sample.boxes)
        info.images[split] = len(samples)
        info.boxes[split] = {n: per_class.get(n, 0) for n in class_list}
    data = {
        "path": str(info.root),
        **{s: f"images/{s}" for s in deduped},
        "names": dict(enumerate(class_list)),
    }
    info.data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    record = {
        "data_hash": info.data_hash,
        "taxonomy_version": TAXONOMY_VERSION,
        "names": class_list,
        "images": info.images,
        "boxes": info.boxes,
        "dropped": info.dropped,
        "sources": {
            s.source: str(SOURCES[s.source].root) if s.source in SOURCES else "" for v in deduped.values() for s in v
        },
        "mappings": {n: dict(src.mapping) for n, src in SOURCES.items()},
        **({"specs": {k: list(v) for k, v in specs.items()}} if specs else {}),
        **({"piles": {"gap": PILE_GAP, "sources": sorted({s.source for s in deduped.get("train", [])
                                                          if s.source in SOURCES and SOURCES[s.source].per_item})}}
           if piles else {}),
    }
    (out / "dataset.json").write_text(json.dumps(record, indent=2))
    return info


def _parse_spec(spec: str) -> tuple[Source, list[str], str | None]:
    """``street-waste-cn:train`` -> (source, [split], None); ``runs/data/paste:train`` -> the folder as a
    source already in the taxonomy; ``trash-bags-kr:train+val:holdout`` ->
    (source, [train, val], "holdout"): the splits pooled, then the session part of them
    (:mod:`training.sessions`).

    Raises:
        ValueError: when SOURCE is not declared in :data:`SOURCES`, SPLIT is missing or PART is
            not one of ``fit``, ``holdout``.
    """
    name, _, rest = spec.partition(":")
    splits, _, part = rest.partition(":")
    folder = Path(name)
    known = name in SOURCES or (folder / "data.yaml").is_file()
    if not known or not splits or any(not s for s in splits.split("+")):
        raise ValueError(
            f"expected SOURCE:SPLIT[+SPLIT][:PART] with SOURCE in {sorted(SOURCES)} or a folder holding a data.yaml"
            f" in the taxonomy (such as training.copy_paste writes), got {spec!r}"
        )
    if part and part not in PARTS:
        raise ValueError(
            f"{spec!r}: PART must be one of {PARTS} (photos split by shooting session, or by a hash of the name)"
        )
    source = SOURCES[name] if name in SOURCES else taxonomy_source(folder)
    return source, splits.split("+"), part or None


def import_spec(spec: str, piles: bool = False) -> tuple[list[Sample], Counter[str]]:
    """The samples a ``SOURCE:SPLIT[+SPLIT][:PART]`` spec names, and what was dropped.

    ``piles``: a source that boxes every item (``Source.per_item``) gets one box per pile instead
    (:func:`merge_piles`); what was joined is counted as ``joined_into_piles``.
    """
    source, source_splits, part = _parse_spec(spec)
    samples: list[Sample] = []
    dropped: Counter[str] = Counter()
    for split in source_splits:
        got, why = import_split(source, split)
        samples.extend(got)
        dropped.update(why)
    if part is not None:
        keep = set(split_parts([s.image.name for s in samples]).part(part))
        samples = [s for s in samples if s.image.name in keep]
    if piles and source.per_item:
        joined = [replace(s, boxes=tuple(merge_piles(s.boxes))) for s in samples]
        dropped["joined_into_piles"] += sum(len(a.boxes) - len(b.boxes) for a, b in zip(samples, joined, strict=True))
        samples = joined
    return samples, dropped


def build(out: Path, train: Sequence[str], val: Sequence[str], piles: bool = False) -> DatasetInfo:
    """Import ``SOURCE:SPLIT[+SPLIT][:PART]`` specs into the train and val splits of a dataset at ``out``.

    ``piles``: training photos of a source that boxes every item get one box per pile (validation
    photos keep their labels, so that a held-out test is measured against what was labelled).
    """
    splits: dict[str, list[Sample]] = {"train": [], VAL_SPLIT: []}
    dropped: Counter[str] = Counter()
    for split, specs in (("train", train), (VAL_SPLIT, val)):
        for spec in specs:
            samples, why = import_spec(spec, piles=piles and split != VAL_SPLIT)
            splits[split].extend(samples)
            dropped.update(why)
    return write_dataset(out, splits, import_dropped=dropped, specs={"train": list(train), VAL_SPLIT: list(val)},
                         piles=piles)


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "train_specs", multiple=True, default=["street-waste-cn:train"], show_default=True,
              metavar="SOURCE:SPLIT[+SPLIT][:fit|holdout]",
              help="A split imported as training photos (repeatable); +SPLIT pools splits, :fit or :holdout keeps one "
              "part of them (by shooting session, or by a hash of the file name).")
@click.option("--no-train", is_flag=True, help="Write no training split: a validation-only (held-out) dataset.")
@click.option("--val", "val_specs", multiple=True, default=["street-waste-cn:val"], show_default=True,
              metavar="SOURCE:SPLIT", help="A split imported as validation photos (repeatable).")
@click.option("--piles", is_flag=True,
              help="Training photos of a source that boxes every bag (trash-bags-kr) get one box per pile, as "
              "street-waste-cn labels them.")
def main(out: Path, train_specs: tuple[str, ...], no_train: bool, val_specs: tuple[str, ...], piles: bool) -> None:
    """Import YOLO datasets into the vipare taxonomy at OUT (e.g. runs/data/swcn); print the dataset record."""
    if no_train:
        if click.get_current_context().get_parameter_source("train_specs") is ParameterSource.COMMANDLINE:
            raise click.UsageError("give --train or --no-train, not both")
        train_specs = ()
    # Refuse an unknown SOURCE:SPLIT before anything is imported.
    for hint, specs in (("--train", train_specs), ("--val", val_specs)):
        for spec in specs:
            try:
                _parse_spec(spec)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=hint) from None
    logging.basicConfig(level=logging.INFO)
    info = build(out, train_specs, val_specs, piles=piles)
    click.echo(
        json.dumps(
            {
                "data_yaml": str(info.data_yaml),
                "data_hash": info.data_hash,
                "images": info.images,
                "boxes": info.boxes,
                "dropped": info.dropped,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
