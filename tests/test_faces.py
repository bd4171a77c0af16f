"""vipare.faces: YuNet on onnxruntime finds the faces OpenCV's FaceDetectorYN finds.

The pure stages on hand-made arrays; then the shipped YuNet against ``cv2.FaceDetectorYN`` (the
reference, OpenCV being a dependency anyway) on drawn faces at several sizes and thresholds, and on
the privacy set's street photos (``tests/data/privacy_boxes.json``, skipped without ../shared).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from tests.onnxgen import make_detector_onnx
from vipare.errors import ModelError
from vipare.faces import FaceDetector, Faces, decode_faces, face_blob, suppress
from vipare.privacy import box_iou
from vipare.settings import Settings
from vipare.size import Size

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
PRIVACY_SET = ROOT / "tests" / "data" / "privacy_boxes.json"
MODEL = Settings().face_model_path


# --------------------------------------------------------------------------------------------------
# The pure stages


def test_the_blob_is_bgr_unscaled_and_padded_with_zeros_bottom_right() -> None:
    image = np.zeros((33, 40, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    image[0, 0] = (255, 0, 7)
    blob = face_blob(image, 32)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert blob[0, :, 0, 0].tolist() == [7.0, 0.0, 255.0]
    assert blob[0, :, 32, 39].tolist() == [30.0, 20.0, 10.0]
    assert not blob[0, :, 33:, :].any() and not blob[0, :, :, 40:].any()
    assert face_blob(np.zeros((64, 32, 3), np.uint8), 32).shape == (1, 3, 64, 32)  # already a multiple


@pytest.mark.parametrize("image", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)])
def test_the_blob_wants_an_rgb_uint8_image(image: NDArray[np.generic]) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        face_blob(image, 32)  # type: ignore[arg-type]


def _outputs(padded: Size, strides: tuple[int, ...]) -> dict[str, NDArray[np.float32]]:
    out: dict[str, NDArray[np.float32]] = {}
    for s in strides:
        cells = (padded.width // s) * (padded.height // s)
        out |= {
            f"cls_{s}": np.zeros((1, cells, 1), np.float32),
            f"obj_{s}": np.zeros((1, cells, 1), np.float32),
            f"bbox_{s}": np.zeros((1, cells, 4), np.float32),
        }
    return out


def test_an_anchor_becomes_a_box_around_its_cell_and_scores_the_root_of_cls_times_obj() -> None:
    padded = Size(64, 32)  # stride 8: 8 columns x 4 rows; stride 16: 4 x 2
    out = _outputs(padded, (8, 16))
    cell = 2 * 8 + 5  # row 2, column 5
    out["cls_8"][0, cell, 0], out["obj_8"][0, cell, 0] = 0.81, 0.81
    out["bbox_8"][0, cell] = (0.5, 0.25, math.log(2.0), 0.0)  # centre (44, 18), 16 x 8
    out["cls_16"][0, 1, 0], out["obj_16"][0, 1, 0] = 1.5, 0.25  # cls clipped to 1: sqrt(0.25)
    out["cls_8"][0, 0, 0], out["obj_8"][0, 0, 0] = 0.49, 0.49  # under the threshold
    out["cls_8"][0, 1, 0], out["obj_8"][0, 1, 0] = -1.0, 1.0  # clipped to 0
    boxes, scores = decode_faces(out, padded, (8, 16), score_threshold=0.5)
    assert scores.tolist() == pytest.approx([0.81, 0.5])  # stride 8 first, whatever the scores
    assert boxes[0].tolist() == pytest.approx([36.0, 14.0, 16.0, 8.0])  # x, y, w, h
    assert boxes[1].tolist() == pytest.approx([8.0, -8.0, 16.0, 16.0])  # row 0, column 1 of stride 16
    assert boxes.dtype == np.float32 and scores.dtype == np.float32


def test_no_anchor_over_the_threshold_gives_no_box() -> None:
    boxes, scores = decode_faces(_outputs(Size(32, 32), (8, 16, 32)), Size(32, 32), (8, 16, 32), score_threshold=0.1)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


@pytest.mark.parametrize(
    ("boxes", "scores", "kept"),
    [
        # IoU of the whole-pixel boxes exactly 0.3 (30 / 100): kept, as OpenCV keeps overlaps <= 0.3
        ([(0, 0, 10, 10), (0, 0, 10, 3)], [0.9, 0.8], [0, 1]),
        ([(0, 0, 10, 10), (0, 0, 10, 4)], [0.9, 0.8], [0]),
        # cut to whole pixels first: y 5.9 -> 5 makes the IoU 5/15 (dropped), where 4.1/15.9 would be kept
        ([(0, 0, 10, 10), (0, 5.9, 10, 10)], [0.9, 0.8], [0]),
        ([(0, 0, 10, 10), (0, 6.0, 10, 10)], [0.9, 0.8], [0, 1]),
        # best first, ties in input order
        ([(50, 50, 10, 10), (0, 0, 10, 10), (90, 0, 10, 10)], [0.7, 0.7, 0.9], [2, 0, 1]),
        # a box dropped drops nothing: the third overlaps only the second (IoU 0.43), which the first drops
        ([(0, 0, 10, 10), (4, 0, 10, 10), (8, 0, 10, 10)], [0.9, 0.8, 0.7], [0, 2]),
        # scores must be strictly above the threshold (0.5)
        ([(0, 0, 10, 10), (50, 50, 10, 10)], [0.5, 0.6], [1]),
        # boxes under a pixel wide are empty: two of them overlap fully
        ([(0, 0, 0.5, 10), (40, 40, 0.9, 10)], [0.9, 0.8], [0]),
    ],
)
def test_suppression_is_opencvs_on_whole_pixel_boxes(
    boxes: list[tuple[float, ...]], scores: list[float], kept: list[int]
) -> None:
    got = suppress(np.array(boxes, np.float32), np.array(scores, np.float32), score_threshold=0.5)
    assert got.tolist() == kept


def test_suppression_keeps_the_top_k_candidates() -> None:
    boxes = np.array([(0, 0, 10, 10), (50, 50, 10, 10), (100, 100, 10, 10)], np.float32)
    scores = np.array([0.6, 0.9, 0.8], np.float32)
    assert suppress(boxes, scores, score_threshold=0.5, top_k=2).tolist() == [1, 2]
    assert suppress(boxes, scores, score_threshold=0.5, top_k=0).tolist() == [1, 2, 0]
    assert suppress(np.empty((0, 4), np.float32), np.empty(0, np.float32), score_threshold=0.5).tolist() == []


# --------------------------------------------------------------------------------------------------
# Loading


def test_a_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        FaceDetector(tmp_path / "none.onnx", score_threshold=0.6, intra_op_threads=1)


def test_an_empty_model_file_says_so_and_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="face model .*empty.onnx is empty \\(set VIPARE_FACE_MODEL_PATH\\)"):
        FaceDetector(tmp_path / "empty.onnx", score_threshold=0.6, intra_op_threads=1)


def test_a_model_without_yunets_outputs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "yolo.onnx"
    make_detector_onnx(path, names={0: "person"}, raw=np.zeros((1, 5, 8), np.float32))
    with pytest.raises(ModelError, match="not a YuNet face model"):
        FaceDetector(path, score_threshold=0.6, intra_op_threads=1)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a model")
    with pytest.raises(ModelError, match="not a usable YuNet face model"):
        FaceDetector(path, score_threshold=0.6, intra_op_threads=1)


@pytest.mark.parametrize("arguments", [{"score_threshold": 1.5}, {"nms_threshold": -0.1}, {"intra_op_threads": -1}])
def test_out_of_range_arguments_are_refused(arguments: dict[str, float]) -> None:
    settings: dict[str, float] = {"score_threshold": 0.6, "intra_op_threads": 1} | arguments
    with pytest.raises(ValueError):
        FaceDetector(MODEL, **settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The shipped YuNet against OpenCV's FaceDetectorYN


def _drawn_faces(size: Size) -> NDArray[np.uint8]:
    """Three cartoon faces (skin-coloured ovals with eyes, brows, nose, mouth) on grey, RGB."""
    image = np.full((300, 400, 3), 90, np.uint8)
    for cx, cy, r in ((110, 150, 50), (290, 140, 40), (200, 250, 25)):
        cv2.ellipse(image, (cx, cy), (r, int(r * 1.3)), 0, 0, 360, (224, 172, 140), -1)
        for dx in (-int(r / 2.5), int(r / 2.5)):
            cv2.ellipse(image, (cx + dx, cy - r // 3), (r // 5, r // 9), 0, 0, 360, (255, 255, 255), -1)
            cv2.circle(image, (cx + dx, cy - r // 3), r // 10, (40, 30, 20), -1)
        cv2.line(image, (cx, cy - r // 6), (cx - r // 10, cy + r // 5), (150, 100, 80), 2)
        cv2.ellipse(image, (cx, cy + r // 2), (r // 3, r // 8), 0, 0, 180, (150, 50, 50), -1)
        cv2.line(image, (cx - r // 2, cy - int(r / 1.6)), (cx - r // 6, cy - int(r / 1.7)), (60, 40, 30), 3)
        cv2.line(image, (cx + r // 6, cy - int(r / 1.7)), (cx + r // 2, cy - int(r / 1.6)), (60, 40, 30), 3)
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def _opencv(image: NDArray[np.uint8], threshold: float) -> Faces:
    detector = cv2.FaceDetectorYN.create(str(MODEL), "", Size.of(image), threshold)
    _, rows = detector.detect(np.ascontiguousarray(image[:, :, ::-1]))
    if rows is None:
        return Faces(np.empty((0, 4), np.float32), np.empty(0, np.float32))
    boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
    return Faces(boxes.astype(np.float32), rows[:, -1].astype(np.float32))


def _assert_same_faces(ours: Faces, theirs: Faces) -> None:
    """Same faces in the same order: boxes within a pixel (IoU > 0.95), scores within 0.01."""
    assert len(ours) == len(theirs), (ours.scores, theirs.scores)
    for a, b, sa, sb in zip(ours.boxes.tolist(), theirs.boxes.tolist(), ours.scores, theirs.scores, strict=True):
        assert box_iou(a, b) > 0.95 and max(abs(u - v) for u, v in zip(a, b, strict=True)) <= 1.0, (a, b)
        assert abs(float(sa) - float(sb)) <= 0.01


@pytest.mark.real_model
@pytest.mark.parametrize("size", [Size(400, 300), Size(1008, 756), Size(333, 250), Size(640, 480)])
@pytest.mark.parametrize("threshold", [0.6, 0.2, 0.01])
def test_drawn_faces_are_found_as_opencv_finds_them(size: Size, threshold: float) -> None:
    """At 0.01, tens of anchors of each face take part in the suppression."""
    image = _drawn_faces(size)
    ours = FaceDetector(MODEL, score_threshold=threshold, intra_op_threads=1).detect(image)
    assert len(ours) >= 1
    _assert_same_faces(ours, _opencv(image, threshold))


@pytest.mark.real_model
@pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")
@pytest.mark.parametrize("threshold", [0.6, 0.3])
def test_faces_in_street_photos_are_found_as_opencv_finds_them(threshold: float) -> None:
    """The privacy set's photos with the most faces, at their size, a phone photo's reduced size and an odd one."""
    cases = sorted(json.loads(PRIVACY_SET.read_text())["photos"], key=lambda case: -len(case["faces"]))[:8]
    detector = FaceDetector(MODEL, score_threshold=threshold, intra_op_threads=1)
    found = 0
    for case in cases:
        bgr = cv2.imread(str(DATASETS / case["photo"]))
        assert bgr is not None, case["photo"]
        photo = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
        for size in (None, Size(1008, 756), Size(500, 381)):
            image = photo if size is None else np.asarray(cv2.resize(photo, size), dtype=np.uint8)
            ours = detector.detect(image)
            _assert_same_faces(ours, _opencv(image, threshold))
            found += len(ours)
    assert found >= 10


@pytest.mark.real_model
def test_one_detector_serves_threads_at_different_sizes() -> None:
    detector = FaceDetector(MODEL, score_threshold=0.2, intra_op_threads=1)
    images = [_drawn_faces(size) for size in (Size(400, 300), Size(1008, 756), Size(333, 250), Size(640, 480))] * 3
    alone = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(detector.detect, images))
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
