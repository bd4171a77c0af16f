"""The checkpoint rebuilt from the shipped ONNX gives the ONNX's outputs and trains (slow, marked ``train``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from training.from_onnx import DEFAULT_PARITY_DIR, check_parity, read_onnx, save_checkpoint  # noqa: E402
from training.images import image_files  # noqa: E402
from training.rebuild import DEFAULT_CALIBRATION_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ONNX = ROOT / "weights" / "vipare-yolo11n.onnx"
SHIPPED_PT = ROOT / "weights" / "vipare-yolo11n.pt"
CALIBRATION_PHOTOS = 16
PARITY_PHOTOS = 4

pytestmark = [
    pytest.mark.train,
    pytest.mark.slow,
    pytest.mark.skipif(not SHIPPED_ONNX.exists(), reason="shipped weights missing"),
    pytest.mark.skipif(not DEFAULT_CALIBRATION_DIR.exists(), reason="shared datasets missing"),
]


def test_rebuilt_checkpoint_gives_the_onnx_outputs(tmp_path: Path) -> None:
    out = save_checkpoint(SHIPPED_ONNX, tmp_path / "rebuilt.pt", calibration_count=CALIBRATION_PHOTOS)
    parity = check_parity(SHIPPED_ONNX, out, image_files(DEFAULT_PARITY_DIR, PARITY_PHOTOS))
    print(parity.summary())
    assert parity.ok, parity.summary()
    assert parity.images == PARITY_PHOTOS

    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    model, _ = load_checkpoint(out)
    _, meta = read_onnx(SHIPPED_ONNX)
    assert tuple(model.names.values()) == meta.names
    assert model.args["imgsz"] == meta.input_size.height
    # The trainer builds a fresh model of the dataset's classes and transfers every tensor into it,
    # BatchNorms included: fine-tuning starts from the shipped model, not from random layers.
    fresh = DetectionModel(model.yaml, nc=len(meta.names), verbose=False)
    fresh.load(model, verbose=False)
    assert all((fresh.state_dict()[k] == v).all() for k, v in model.float().state_dict().items())


@pytest.mark.skipif(not SHIPPED_PT.exists(), reason="weights/vipare-yolo11n.pt not built")
def test_shipped_checkpoint_gives_the_shipped_onnx_outputs() -> None:
    parity = check_parity(SHIPPED_ONNX, SHIPPED_PT, image_files(DEFAULT_PARITY_DIR, PARITY_PHOTOS))
    print(parity.summary())
    assert parity.ok, parity.summary()
