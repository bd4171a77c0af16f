"""The shipped model through vipare: real photos, and parity with Ultralytics on the same ONNX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vipare import Pipeline, Settings
from vipare.detection import Detector
from vipare.settings import DEFAULT_MODEL_PATH

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "datasets" / "samples"
SHARED_VAL = ROOT.parent / "shared" / "datasets" / "street-waste-cn" / "images" / "val"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason="no shipped model in weights/"),
]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(settings=Settings(model_path=DEFAULT_MODEL_PATH))


def test_shipped_model_identity(pipeline: Pipeline) -> None:
    info = pipeline.detector.info
    assert info.classes == ["dumped_waste", "overflowing_bin", "bin"]
    assert info.taxonomy_version == "1"
    assert len(info.sha256) == 64
    assert DEFAULT_MODEL_PATH.stat().st_size <= 12 * 1024 * 1024


def test_sample_pile_of_waste_is_dumping(pipeline: Pipeline) -> None:
    result = pipeline.analyze(SAMPLES / "street-waste-cn-000031.jpg")
    assert result.verdict.dumping
    assert any(d.label == "dumped_waste" for d in result.detections)


PARITY_PHOTOS = sorted(SHARED_VAL.glob("*.jpg"))[:20]


@pytest.mark.skipif(not PARITY_PHOTOS, reason="../shared datasets not present")
def test_boxes_match_ultralytics_on_the_same_onnx(pipeline: Pipeline) -> None:
    ultralytics = pytest.importorskip("ultralytics")
    # One pass over the whole photo, as Ultralytics makes (the tiled second look is tests/test_tiles.py's),
    # and the boxes as the network drew them, which Ultralytics does not merge.
    settings = pipeline.settings.model_copy(update={"tiles_when_empty": False, "box_merge_iou": 1.0})
    pipeline = Pipeline(Detector.from_settings(settings), settings)
    settings = pipeline.settings
    yolo = ultralytics.YOLO(str(settings.model_path), task="detect")
    compared = 0
    for photo in PARITY_PHOTOS:
        ours = pipeline.analyze(photo).detections
        theirs = yolo.predict(str(photo), imgsz=pipeline.detector.input_size.hw, conf=settings.conf_threshold,
                              iou=settings.iou_threshold, max_det=settings.max_detections, verbose=False)[0].boxes
        their_boxes = theirs.xyxy.numpy()
        their_scores = theirs.conf.numpy()
        their_classes = theirs.cls.numpy().astype(int)
        # Detections near the score threshold may fall on either side of it in the two decoders.
        margin = 0.01
        ours_kept = [d for d in ours if d.score >= settings.conf_threshold + margin]
        theirs_kept = their_scores >= settings.conf_threshold + margin
        assert len(ours_kept) == int(theirs_kept.sum()), photo.name
        for d in ours_kept:
            same_class = np.flatnonzero(theirs_kept & (their_classes == d.class_id))
            assert same_class.size, f"{photo.name}: no Ultralytics box of class {d.label}"
            dist = np.abs(their_boxes[same_class] - np.asarray(d.box)).max(axis=1)
            j = same_class[int(np.argmin(dist))]
            assert dist.min() <= 1.0, f"{photo.name}: box {d.box} vs {their_boxes[j]}"
            assert abs(their_scores[j] - d.score) <= 0.01, f"{photo.name}: score {d.score} vs {their_scores[j]}"
            compared += 1
    assert compared >= 20  # the comparison covered real detections, not empty lists



FACE_PHOTO = ROOT.parent / "shared" / "datasets" / "street-waste-cn" / "images" / "train" / "000094_jpg.jpg"
FACE = (338, 113, 432, 199)  # tests/data/privacy_boxes.json: a face checked by eye, on a person's head


@pytest.mark.skipif(not FACE_PHOTO.exists(), reason="../shared datasets not present")
def test_only_deposits_that_count_towards_the_verdict_are_spared_by_the_blur() -> None:
    """A find too weak for the verdict (below its class's threshold) over a face leaves the face and the
    head around it blurred; one that counts is left visible, the head cut around it."""
    from vipare.results import Detection

    blurring = Pipeline(settings=Settings(model_path=DEFAULT_MODEL_PATH, blur_photos=True))
    image = blurring.decode(FACE_PHOTO)
    bar = blurring.verdict_thresholds["overflowing_bin"]
    x1, y1, x2, y2 = FACE

    def face_blurred_whole(score: float, *, every_deposit: bool = False) -> bool:
        deposit = Detection(label="overflowing_bin", class_id=1, score=score, box=(x1 - 10, y1 - 10, x2 + 10, y2 + 10),
                            area_fraction=0.05, deposit=True)
        covered = np.zeros((image.info.size.height, image.info.size.width), bool)
        for region in blurring.private_regions(image, [deposit], every_deposit=every_deposit):
            a, b, c, d = (round(v) for v in region.box)
            covered[b:d, a:c] = True
        return bool(covered[y1:y2, x1:x2].all())

    assert face_blurred_whole(0.0)
    assert face_blurred_whole(bar - 0.01)
    assert not face_blurred_whole(bar)
    assert not face_blurred_whole(bar - 0.01, every_deposit=True)  # an agent said there is a deposit
