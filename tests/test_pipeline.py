"""Pipeline: verdict rule, and a photo going end to end through a tiny ONNX model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.imagegen import make_photo
from tests.onnxgen import make_detector_onnx
from vipare import Detection, ImageResult, Pipeline, Settings, decide_verdict
from vipare.geotag import CameraPosition, ClientPosition
from vipare.pipeline import counted_deposits


def _det(label: str, score: float, deposit: bool) -> Detection:
    return Detection(label=label, class_id=0, score=score, box=(0, 0, 1, 1), area_fraction=0.1, deposit=deposit)


@pytest.mark.parametrize(
    ("detections", "threshold", "dumping", "score"),
    [
        ([], 0.35, False, 0.0),
        ([_det("bin", 0.99, False)], 0.35, False, 0.0),
        ([_det("dumped_waste", 0.34, True)], 0.35, False, 0.34),
        ([_det("dumped_waste", 0.35, True)], 0.35, True, 0.35),
        ([_det("bin", 0.9, False), _det("overflowing_bin", 0.6, True), _det("dumped_waste", 0.4, True)],
         0.5, True, 0.6),
        ([_det("dumped_waste", 0.2, True)], 0.0, True, 0.2),
    ],
)
def test_verdict_rule(detections: list[Detection], threshold: float, dumping: bool, score: float) -> None:
    verdict = decide_verdict(detections, threshold)
    assert verdict.dumping is dumping
    assert verdict.score == pytest.approx(score)
    assert verdict.threshold == threshold


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_verdict_threshold_range(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        decide_verdict([], threshold)


# A tiny model of input 64x64 whose raw output holds one deposit box and one bin box.
IMGSZ = (64, 64)
NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    # Columns: cx, cy, w, h (input pixels) then one score per class.
    raw = np.zeros((1, 4 + len(NAMES), 3), dtype=np.float32)
    raw[0, :, 0] = [16, 32, 16, 32, 0.9, 0.0, 0.0]  # dumped_waste, x 8..24, y 16..48
    raw[0, :, 1] = [48, 32, 16, 16, 0.0, 0.0, 0.8]  # bin, x 40..56, y 24..40
    raw[0, :, 2] = [48, 32, 16, 16, 0.0, 0.0, 0.1]  # below the score threshold
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_detector_onnx(path, names=NAMES, imgsz=IMGSZ, stride=32, raw=raw)
    settings = Settings(model_path=path, conf_threshold=0.25, verdict_threshold=0.5, intra_op_threads=1)
    return Pipeline(settings=settings)


def test_geotagged_photo_end_to_end(pipeline: Pipeline) -> None:
    # 640x640 photo: the 64x64 input is a 1/10 scale, with no padding.
    data = make_photo("JPEG", (640, 640), lat=49.1193, lon=6.1757, hpos_error=5.0)
    result = pipeline.analyze(data, name="upload.jpg")

    assert [d.label for d in result.detections] == ["dumped_waste", "bin"]
    np.testing.assert_allclose(result.detections[0].box, (80, 160, 240, 480), atol=1e-3)
    np.testing.assert_allclose(result.detections[1].box, (400, 240, 560, 400), atol=1e-3)
    assert result.detections[0].area_fraction == pytest.approx(160 * 320 / 640**2)
    assert result.verdict.dumping and result.verdict.score == pytest.approx(0.9)
    assert result.location is not None and result.location.source == "exif"
    assert result.location.lat == pytest.approx(49.1193, abs=1e-6)
    assert result.location.accuracy_m == pytest.approx(5.0)
    assert result.model.classes == list(NAMES.values())
    assert result.source == "upload.jpg"


def test_client_then_camera_position(pipeline: Pipeline) -> None:
    data = make_photo("PNG", (320, 240))
    camera = CameraPosition(camera_id="cam-7", lat=49.1, lon=6.2)
    from_client = pipeline.analyze(data, client=ClientPosition(lat=48.5, lon=7.7, accuracy_m=12), camera=camera)
    assert from_client.location is not None and from_client.location.source == "client"
    from_camera = pipeline.analyze(data, camera=camera)
    assert from_camera.location is not None and from_camera.location.source == "camera"
    assert from_camera.location.camera_id == "cam-7"
    assert pipeline.analyze(data).location is None


def test_result_json_round_trip(pipeline: Pipeline) -> None:
    data = make_photo("JPEG", (800, 600), lat=-33.8688, lon=151.2093)
    result = pipeline.analyze(data)
    text = result.model_dump_json()
    assert ImageResult.model_validate_json(text) == result
    assert json.loads(text)["detections"][0]["label"] == "dumped_waste"


@pytest.mark.parametrize("orientation", [6, 8])
def test_boxes_are_in_the_upright_frame_of_a_rotated_photo(pipeline: Pipeline, orientation: int) -> None:
    # Stored 640x480 and turned by EXIF: upright it is 480x640, letterboxed at scale 0.1 with 8 px
    # of padding left and right of the 48x64 resized photo.
    data = make_photo("JPEG", (640, 480), orientation=orientation)
    result = pipeline.analyze(data)
    assert (result.image.width, result.image.height) == (480, 640)
    # The model's deposit box spans x 8..24, y 16..48 of its 64x64 input.
    np.testing.assert_allclose(result.detections[0].box, (0, 160, 160, 480), atol=1e-3)


def _labelled(label: str, score: float) -> Detection:
    return Detection(label=label, class_id=0, score=score, box=(0, 0, 1, 1), area_fraction=0.1,
                     deposit=label != "bin")


@pytest.mark.parametrize(
    ("detections", "dumping", "score", "threshold"),
    [
        # An ordinary container read as overflowing at 0.6 does not pass its class's 0.7.
        ([_labelled("overflowing_bin", 0.6)], False, 0.6, 0.7),
        ([_labelled("overflowing_bin", 0.6), _labelled("dumped_waste", 0.32)], True, 0.32, 0.3),
        ([_labelled("overflowing_bin", 0.75), _labelled("dumped_waste", 0.32)], True, 0.75, 0.7),
        ([_labelled("bin", 0.99)], False, 0.0, 0.3),
    ],
)
def test_per_class_thresholds(detections: list[Detection], dumping: bool, score: float, threshold: float) -> None:
    verdict = decide_verdict(detections, {"dumped_waste": 0.3, "overflowing_bin": 0.7})
    assert (verdict.dumping, verdict.score, verdict.threshold) == (dumping, pytest.approx(score), threshold)


def test_a_class_without_a_threshold_never_counts() -> None:
    assert not decide_verdict([_labelled("overflowing_bin", 0.99)], {"dumped_waste": 0.3}).dumping


def test_only_deposits_at_their_class_s_threshold_count() -> None:
    found = [_det("dumped_waste", 0.29, True), _det("dumped_waste", 0.3, True), _det("overflowing_bin", 0.69, True),
             _det("overflowing_bin", 0.7, True), _det("bin", 0.99, False), _det("litter", 0.99, True)]
    counted = counted_deposits(found, {"dumped_waste": 0.3, "overflowing_bin": 0.7})
    assert [(d.label, d.score) for d in counted] == [("dumped_waste", 0.3), ("overflowing_bin", 0.7)]


def _calibrated_model(path, thresholds: str | None, raw: np.ndarray) -> None:
    metadata = {"vipare_verdict_thresholds": thresholds} if thresholds is not None else None
    make_detector_onnx(path, names=NAMES, imgsz=IMGSZ, stride=32, raw=raw, metadata=metadata)


def _one(class_id: int, score: float) -> np.ndarray:
    raw = np.zeros((1, 4 + len(NAMES), 1), dtype=np.float32)
    raw[0, :4, 0] = [32, 32, 16, 16]
    raw[0, 4 + class_id, 0] = score
    return raw


def test_the_model_s_calibrated_thresholds_apply_unless_one_is_set(tmp_path) -> None:
    path = tmp_path / "calibrated.onnx"
    _calibrated_model(path, "{'dumped_waste': 0.3, 'overflowing_bin': 0.7}", _one(1, 0.6))
    photo = make_photo("JPEG", (640, 640))
    calibrated = Pipeline(settings=Settings(model_path=path, intra_op_threads=1))
    assert calibrated.verdict_thresholds == {"dumped_waste": 0.3, "overflowing_bin": 0.7}
    assert not calibrated.analyze(photo).verdict.dumping
    fixed = Pipeline(settings=Settings(model_path=path, verdict_threshold=0.5, intra_op_threads=1))
    assert fixed.verdict_thresholds == {"dumped_waste": 0.5, "overflowing_bin": 0.5}
    assert fixed.analyze(photo).verdict.dumping


def test_tile_finds_need_the_model_s_tile_thresholds_or_a_margin(tmp_path) -> None:
    from vipare.pipeline import tile_thresholds

    path = tmp_path / "tiles.onnx"
    make_detector_onnx(path, names=NAMES, imgsz=IMGSZ, stride=32, raw=_one(0, 0.5), metadata={
        "vipare_verdict_thresholds": "{'dumped_waste': 0.3, 'overflowing_bin': 0.7}",
        "vipare_tile_thresholds": "{'dumped_waste': 0.45}",
    })
    calibrated = Pipeline(settings=Settings(model_path=path, intra_op_threads=1))
    assert tile_thresholds(calibrated.detector, calibrated.settings) == {"dumped_waste": 0.45, "overflowing_bin": 0.95}
    fixed = Settings(model_path=path, verdict_threshold=0.4, intra_op_threads=1)
    assert tile_thresholds(calibrated.detector, fixed) == {"dumped_waste": 0.65, "overflowing_bin": 0.65}


def test_a_model_without_thresholds_gets_the_default(tmp_path) -> None:
    path = tmp_path / "plain.onnx"
    _calibrated_model(path, None, _one(0, 0.36))
    pipeline = Pipeline(settings=Settings(model_path=path, intra_op_threads=1))
    assert pipeline.verdict_thresholds == {"dumped_waste": 0.35, "overflowing_bin": 0.35}
    assert pipeline.analyze(make_photo("JPEG", (64, 64))).verdict.dumping


@pytest.mark.parametrize("value", ["{'bin_bag': 0.3}", "{'dumped_waste': 1.3}", "[0.3]", "{'dumped_waste': True}"])
def test_malformed_thresholds_are_refused_at_load(tmp_path, value: str) -> None:
    from vipare import Detector, ModelMetadataError

    path = tmp_path / "bad.onnx"
    _calibrated_model(path, value, _one(0, 0.5))
    with pytest.raises(ModelMetadataError, match="vipare_verdict_thresholds"):
        Detector(path, conf_threshold=0.25, iou_threshold=0.45, max_detections=10, intra_op_threads=1)
