"""Importers for box annotations that are not YOLO text files: COCO JSON and Pascal VOC XML.

Both return :class:`training.datasets.Sample` lists in the project taxonomy, ready for
:func:`training.datasets.write_dataset`. As for YOLO sources, every source class must be declared in
``mapping`` (mapped to a project class name, or None to drop it): an undeclared class is an error,
never a silent drop.

COCO ``bbox`` is ``[x, y, width, height]`` in pixels from the top-left corner; VOC ``bndbox`` is
``xmin ymin xmax ymax`` in pixels (1-based by convention; the one-pixel offset is ignored, well below
label noise). Both become normalized YOLO boxes, clipped to the image.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from training.datasets import Box, Sample, box_from_corners, file_sha256
from vipare.taxonomy import class_names

__all__ = ["import_coco_json", "import_voc"]


def _target(name: str, mapping: Mapping[str, str | None], names: Sequence[str], source: str) -> int | None:
    if name not in mapping:
        raise KeyError(f"{source}: class {name!r} has no declared mapping")
    target = mapping[name]
    return None if target is None else list(names).index(target)


def import_coco_json(
    annotations: Path,
    image_dir: Path,
    mapping: Mapping[str, str | None],
    source: str,
    project_names: Sequence[str] | None = None,
) -> tuple[list[Sample], Counter[str]]:
    """Read a COCO detection JSON file.

    Args:
        annotations: the JSON file (``images``, ``annotations``, ``categories``).
        image_dir: folder the ``file_name`` entries are relative to.
        mapping: COCO category name -> project class name, or None to drop.
        source: source name recorded on each sample.
        project_names: class names in model order; defaults to the taxonomy.

    Returns:
        Samples in ``file_name`` order (images without annotations included, as background), and
        counts of what was dropped (``unmapped_class``, ``empty_box``, ``crowd``, ``missing_image``).
    """
    names = list(project_names) if project_names is not None else class_names()
    data = json.loads(annotations.read_text())
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    boxes: dict[int, list[Box]] = defaultdict(list)
    images = {int(i["id"]): i for i in data["images"]}
    dropped: Counter[str] = Counter()
    for ann in data.get("annotations", []):
        if ann.get("iscrowd"):
            dropped["crowd"] += 1
            continue
        target = _target(categories[int(ann["category_id"])], mapping, names, source)
        if target is None:
            dropped["unmapped_class"] += 1
            continue
        image = images[int(ann["image_id"])]
        width, height = float(image["width"]), float(image["height"])
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = box_from_corners(target, x / width, y / height, (x + w) / width, (y + h) / height)
        if box is None:
            dropped["empty_box"] += 1
            continue
        boxes[int(ann["image_id"])].append(box)
    samples = []
    for image_id, image in sorted(images.items(), key=lambda item: str(item[1]["file_name"])):
        path = image_dir / str(image["file_name"])
        if not path.exists():
            dropped["missing_image"] += 1
            continue
        samples.append(Sample(source, path, file_sha256(path), tuple(boxes.get(image_id, []))))
    return samples, dropped


def import_voc(
    xml_dir: Path,
    image_dir: Path,
    mapping: Mapping[str, str | None],
    source: str,
    project_names: Sequence[str] | None = None,
) -> tuple[list[Sample], Counter[str]]:
    """Read a folder of Pascal VOC XML files, one per image.

    Args:
        xml_dir: folder of ``*.xml`` annotations.
        image_dir: folder of the images named by each file's ``<filename>``.
        mapping: VOC object name -> project class name, or None to drop.
        source: source name recorded on each sample.
        project_names: class names in model order; defaults to the taxonomy.

    Returns:
        Samples in XML file-name order, and counts of what was dropped (``unmapped_class``,
        ``empty_box``, ``missing_image``).
    """
    names = list(project_names) if project_names is not None else class_names()
    samples = []
    dropped: Counter[str] = Counter()
    for xml_path in sorted(xml_dir.glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        path = image_dir / root.findtext("filename", default=f"{xml_path.stem}.jpg")
        if not path.exists():
            dropped["missing_image"] += 1
            continue
        width = float(root.findtext("size/width", default="0"))
        height = float(root.findtext("size/height", default="0"))
        boxes = []
        for obj in root.iter("object"):
            target = _target(obj.findtext("name", default="").strip(), mapping, names, source)
            if target is None:
                dropped["unmapped_class"] += 1
                continue
            corners = [float(obj.findtext(f"bndbox/{k}", default="0")) for k in ("xmin", "ymin", "xmax", "ymax")]
            box = (
                box_from_corners(
                    target, corners[0] / width, corners[1] / height, corners[2] / width, corners[3] / height
                )
                if width > 0 and height > 0
                else None
            )
            if box is None:
                dropped["empty_box"] += 1
                continue
            boxes.append(box)
        samples.append(Sample(source, path, file_sha256(path), tuple(boxes)))
    return samples, dropped
