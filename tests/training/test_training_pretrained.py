"""The rebuilt COCO checkpoint detects what the INT8 OpenVINO IR detects (slow, marked ``train``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("openvino")

from training.ir import DEFAULT_IR_DIR  # noqa: E402
from training.parity import check_ir_parity, default_parity_images  # noqa: E402
from training.pretrained import DEFAULT_CALIBRATION_DIR, save_checkpoint  # noqa: E402

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(
        not (DEFAULT_IR_DIR.exists() and DEFAULT_CALIBRATION_DIR.exists()),
        reason="shared IR/datasets missing",
    ),
]

CALIBRATION_PHOTOS = 16
FLOAT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrained") / "yolo11n-coco.pt"
    return save_checkpoint(out, calibration_count=CALIBRATION_PHOTOS)


def test_rebuild_equals_dequantized_ir(checkpoint: Path) -> None:
    """Against the IR with float activations the rebuild must agree to float rounding."""
    report = check_ir_parity(checkpoint, default_parity_images(), quantized=False, score_tol=FLOAT_TOLERANCE)
    print(report.summary())
    assert report.ok
    assert report.min_iou > 1 - FLOAT_TOLERANCE


def test_rebuild_matches_int8_ir_on_bus(checkpoint: Path) -> None:
    """Against the shipped INT8 IR: same classes, IoU >= 0.9, scores within 0.05 on COCO's bus.jpg.

    On other photos a few borderline detections (score near 0.25-0.5) move by more than 0.05
    because the IR quantizes activations to int8; the test above pins the rebuild itself.
    """
    bus = [p for p in default_parity_images() if p.name == "bus.jpg"]
    report = check_ir_parity(checkpoint, bus)
    print(report.summary())
    assert report.ok
    names = {int(row[5]) for row in report.images[0].candidate}
    assert names == {0, 5}  # person, bus
