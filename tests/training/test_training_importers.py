"""COCO JSON and Pascal VOC importers (synthetic files, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.datasets import Box
from training.importers import import_coco_json, import_voc
from vipare.taxonomy import class_names

MAPPING = {"trash": "dumped_waste", "bin": "bin", "person": None}
WIDTH, HEIGHT = 200, 100


def _assert_box(got: Box, want: Box) -> None:
    assert got.cls == want.cls
    assert (got.cx, got.cy, got.w, got.h) == pytest.approx((want.cx, want.cy, want.w, want.h))


def test_import_coco_json(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "b.jpg", "width": WIDTH, "height": HEIGHT},
            {"id": 3, "file_name": "gone.jpg", "width": WIDTH, "height": HEIGHT},
        ],
        "categories": [{"id": 7, "name": "trash"}, {"id": 8, "name": "person"}],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [50, 25, 100, 50]},
            {"image_id": 1, "category_id": 8, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 7, "bbox": [0, 0, 0, 10]},
            {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    samples, dropped = import_coco_json(path, tmp_path, MAPPING, "toy")
    assert [s.image.name for s in samples] == ["a.jpg", "b.jpg"]
    assert len(samples[0].boxes) == 1 and samples[1].boxes == ()
    _assert_box(samples[0].boxes[0], Box(class_names().index("dumped_waste"), 0.5, 0.5, 0.5, 0.5))
    assert dropped == {"unmapped_class": 1, "empty_box": 1, "crowd": 1, "missing_image": 1}


VOC_XML = """<annotation><filename>a.jpg</filename><size><width>200</width><height>100</height></size>
<object><name>bin</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>100</xmax><ymax>100</ymax></bndbox></object>
<object><name>person</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object>
</annotation>"""


def test_import_voc(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "a.xml").write_text(VOC_XML)
    samples, dropped = import_voc(tmp_path, tmp_path, MAPPING, "toy")
    assert len(samples) == 1
    _assert_box(samples[0].boxes[0], Box(class_names().index("bin"), 0.25, 0.5, 0.5, 1.0))
    assert dropped == {"unmapped_class": 1}


def test_undeclared_class_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "a.xml").write_text(VOC_XML.replace("<name>bin</name>", "<name>sofa</name>"))
    with pytest.raises(KeyError):
        import_voc(tmp_path, tmp_path, MAPPING, "toy")
