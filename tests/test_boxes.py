"""Letterbox, blob, decode, NMS and box mapping against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from vipare import boxes as boxes_module
from vipare.boxes import Letterbox, decode, iou_matrix, letterbox, merge_boxes, nms, scale_boxes, to_blob
from vipare.size import Size


def test_all_names_exist() -> None:
    assert all(hasattr(boxes_module, name) for name in boxes_module.__all__)


# --- letterbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_hw", "new_size", "auto", "scale", "pad_x", "pad_y", "resized", "padded"),
    [
        # r = min(64/96, 64/128) = 0.5 -> 64 x 48, 16 rows of padding split 8 / 8
        pytest.param((96, 128), Size(64, 64), False, 0.5, 0, 8, Size(64, 48), Size(64, 64), id="landscape"),
        pytest.param((128, 96), Size(64, 64), False, 0.5, 8, 0, Size(48, 64), Size(64, 64), id="portrait"),
        pytest.param((32, 32), Size(64, 64), False, 2.0, 0, 0, Size(64, 64), Size(64, 64), id="square-upscaled"),
        pytest.param((64, 64), Size(64, 64), False, 1.0, 0, 0, Size(64, 64), Size(64, 64), id="already-right-size"),
        # r = 0.64: 61 * 0.64 = 39.04 -> 39 rows, 25 rows of padding: round(12.4)=12 top, 13 bottom
        pytest.param((61, 100), Size(64, 64), False, 0.64, 0, 12, Size(64, 39), Size(64, 64), id="odd-rows"),
        pytest.param((100, 61), Size(64, 64), False, 0.64, 12, 0, Size(39, 64), Size(64, 64), id="odd-columns"),
        # 125 * 0.5 = 62.5 rounds half to even (Python, like Ultralytics) -> 62 rows, pad 1 / 1
        pytest.param((125, 128), Size(64, 64), False, 0.5, 0, 1, Size(64, 62), Size(64, 64), id="half-to-even"),
        # r = min(32/128, 64/128) = 0.25 -> 32 x 32 in a 64 wide, 32 high input, 32 columns split 16 / 16
        pytest.param((128, 128), Size(64, 32), False, 0.25, 16, 0, Size(32, 32), Size(64, 32), id="rect-input"),
        # a 64 wide, 32 high input: 96 wide, 128 high at r = min(32/128, 64/96) = 0.25 -> 24 x 32
        pytest.param((128, 96), Size(64, 32), False, 0.25, 20, 0, Size(24, 32), Size(64, 32), id="wide-input"),
        # 3 * 0.064 = 0.19 rounds to 0: kept at 1 row; 63 rows of padding: 31 top, 32 bottom
        pytest.param((3, 1000), Size(64, 64), False, 0.064, 0, 31, Size(64, 1), Size(64, 64), id="panorama"),
        # auto: 64 x 30 resized, 34 rows of padding reduced mod 32 to 2 -> 64 wide, 32 high input
        pytest.param((60, 128), Size(64, 64), True, 0.5, 0, 1, Size(64, 30), Size(64, 32), id="auto-stride"),
    ],
)
def test_letterbox_geometry(
    image_hw: tuple[int, int],
    new_size: Size,
    auto: bool,
    scale: float,
    pad_x: int,
    pad_y: int,
    resized: Size,
    padded: Size,
) -> None:
    image = np.full((*image_hw, 3), 200, dtype=np.uint8)
    out, lb = letterbox(image, new_size, 32, auto=auto)

    assert lb.scale == pytest.approx(scale)
    assert (lb.pad_x, lb.pad_y, lb.resized, lb.padded, lb.source) == (pad_x, pad_y, resized, padded, Size.of(image))
    assert all(isinstance(size, Size) for size in (lb.resized, lb.padded, lb.source))
    assert out.shape == (*padded.hw, 3)
    assert out.dtype == np.uint8
    inside = np.zeros(padded.hw, dtype=bool)
    inside[pad_y : pad_y + resized.height, pad_x : pad_x + resized.width] = True
    assert (out[inside] == 200).all()
    assert (out[~inside] == 114).all()


def test_letterbox_pads_with_given_colour_and_keeps_channels() -> None:
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red stays red through the resize
    out, lb = letterbox(image, Size(64, 64), 32, color=0)
    assert (lb.pad_x, lb.pad_y) == (0, 16)
    assert (out[:16] == 0).all() and (out[48:] == 0).all()
    assert (out[16:48] == (255, 0, 0)).all()


def test_letterbox_returns_input_untouched_when_it_fits() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    out, _ = letterbox(image, Size(64, 64), 32)
    assert out is image


@pytest.mark.parametrize(
    ("shape", "new_size", "stride"),
    [
        ((64, 64), Size(64, 64), 32),  # grey image, no channel axis
        ((64, 64, 4), Size(64, 64), 32),  # RGBA
        ((0, 64, 3), Size(64, 64), 32),  # empty
        ((64, 64, 3), Size(64, 60), 32),  # input not a multiple of the stride
        ((64, 64, 3), Size(64, 64), 0),
    ],
)
def test_letterbox_rejects_bad_shapes(shape: tuple[int, ...], new_size: Size, stride: int) -> None:
    with pytest.raises(ValueError):
        letterbox(np.zeros(shape, dtype=np.uint8), new_size, stride)


# --- to_blob ---------------------------------------------------------------------------------


def test_to_blob_layout_and_values() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    blob = to_blob(image)
    assert blob.shape == (1, 3, 32, 64)
    assert blob.dtype == np.float32
    assert blob.flags.c_contiguous
    # Bit-exact with Ultralytics' x / 255 on float32.
    np.testing.assert_array_equal(blob[0], image.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    assert blob[0, 0, 5, 7] == np.float32(image[5, 7, 0]) / np.float32(255)


def test_to_blob_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        to_blob(np.zeros((32, 32), dtype=np.uint8))


# --- decode ----------------------------------------------------------------------------------


def _raw_for_decode() -> np.ndarray:
    # 2 classes, 4 anchors; columns are cx, cy, w, h, score0, score1.
    columns = [
        [10, 20, 4, 6, 0.9, 0.1],  # class 0 at 0.9 -> box (8, 17, 12, 23)
        [30, 30, 10, 10, 0.2, 0.3],  # class 1 at 0.3 -> box (25, 25, 35, 35)
        [50, 40, 2, 8, 0.1, 0.6],  # class 1 at 0.6 -> box (49, 36, 51, 44)
        [5, 5, 2, 2, 0.25, 0.0],  # exactly 0.25: not above 0.25
    ]
    return np.array(columns, dtype=np.float32).T[None]


@pytest.mark.parametrize(
    ("conf_threshold", "anchors"),
    [(0.0, [0, 1, 2, 3]), (0.25, [0, 1, 2]), (0.5, [0, 2]), (0.95, [])],
)
def test_decode_filters_strictly_above_threshold(conf_threshold: float, anchors: list[int]) -> None:
    expected_boxes = np.array(
        [[8, 17, 12, 23], [25, 25, 35, 35], [49, 36, 51, 44], [4, 4, 6, 6]], dtype=np.float32
    )
    expected_scores = np.array([0.9, 0.3, 0.6, 0.25], dtype=np.float32)
    expected_classes = np.array([0, 1, 1, 0])

    boxes, scores, class_ids = decode(_raw_for_decode(), conf_threshold=conf_threshold)

    assert boxes.shape == (len(anchors), 4) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes, expected_boxes[anchors])
    np.testing.assert_allclose(scores, expected_scores[anchors])
    np.testing.assert_array_equal(class_ids, expected_classes[anchors])
    assert class_ids.dtype == np.int64


def test_decode_picks_the_best_class() -> None:
    raw = np.array([[0, 0, 2, 2, 0.3, 0.8, 0.5]], dtype=np.float32).T[None]
    _, scores, class_ids = decode(raw, conf_threshold=0.25)
    assert class_ids.tolist() == [1]
    assert scores.tolist() == [pytest.approx(0.8)]


@pytest.mark.parametrize(
    ("shape", "conf_threshold"),
    [((1, 6, 4), -0.1), ((1, 6, 4), 1.1), ((1, 4, 4), 0.25), ((2, 6, 4), 0.25), ((6, 4), 0.25)],
)
def test_decode_rejects_bad_input(shape: tuple[int, ...], conf_threshold: float) -> None:
    with pytest.raises(ValueError):
        decode(np.zeros(shape, dtype=np.float32), conf_threshold=conf_threshold)


# --- nms -------------------------------------------------------------------------------------

# IoU(A, B) = 90 / 110 = 0.82; IoU(A, C) = 50 / 150 = 0.33; IoU(B, C) = 60 / 140 = 0.43
A, B, C = [0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10]
FAR1, FAR2 = [100, 100, 110, 110], [200, 200, 210, 210]
# IoU(P, Q) = 2 / 4 = 0.5 exactly in binary floating point
P, Q = [0, 0, 3, 1], [1, 0, 4, 1]


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "iou_threshold", "max_detections", "expected"),
    [
        pytest.param([A, B], [0.9, 0.8], [0, 0], 0.5, 100, [0], id="same-class-suppressed"),
        pytest.param([A, B], [0.8, 0.9], [0, 0], 0.5, 100, [1], id="better-score-wins"),
        pytest.param([A, B], [0.9, 0.8], [0, 1], 0.5, 100, [0, 1], id="different-classes-kept"),
        pytest.param([A, B], [0.9, 0.8], [0, 0], 0.9, 100, [0, 1], id="overlap-below-threshold"),
        pytest.param([P, Q], [0.9, 0.8], [0, 0], 0.5, 100, [0, 1], id="iou-equal-threshold-kept"),
        pytest.param([P, Q], [0.9, 0.8], [0, 0], 0.49, 100, [0], id="iou-just-above-threshold"),
        pytest.param(
            [A, B, C], [0.9, 0.8, 0.7], [0, 0, 0], 0.4, 100, [0, 2], id="suppressed-box-suppresses-none"
        ),
        pytest.param([A, FAR1, FAR2], [0.3, 0.9, 0.5], [0, 0, 0], 0.5, 100, [1, 2, 0], id="sorted-by-score"),
        pytest.param([A, FAR1, FAR2], [0.3, 0.9, 0.5], [0, 0, 0], 0.5, 2, [1, 2], id="max-detections-cap"),
        pytest.param([A, A], [0.5, 0.5], [0, 0], 0.5, 100, [0], id="tie-keeps-first"),
        pytest.param([A, A, A], [0.9, 0.8, 0.7], [0, 79, 0], 0.5, 100, [0, 1], id="many-classes"),
        pytest.param(
            [[-20, -20, -10, -10], [-19, -20, -9, -10]],
            [0.9, 0.8],
            [3, 3],
            0.5,
            100,
            [0],
            id="negative-coords",
        ),
        pytest.param([[5, 5, 5, 5], [5, 5, 5, 5]], [0.9, 0.8], [0, 0], 0.5, 100, [0, 1], id="empty-boxes"),
    ],
)
def test_nms(
    boxes: list[list[float]],
    scores: list[float],
    classes: list[int],
    iou_threshold: float,
    max_detections: int,
    expected: list[int],
) -> None:
    keep = nms(
        np.array(boxes, dtype=np.float32),
        np.array(scores, dtype=np.float32),
        np.array(classes, dtype=np.int64),
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    assert keep.tolist() == expected
    assert keep.dtype == np.int64


def test_nms_empty_input() -> None:
    keep = nms(
        np.empty((0, 4), np.float32),
        np.empty(0, np.float32),
        np.empty(0, np.int64),
        iou_threshold=0.5,
        max_detections=10,
    )
    assert keep.shape == (0,) and keep.dtype == np.int64


@pytest.mark.parametrize(
    ("iou_threshold", "max_detections", "n_scores"),
    [(-0.01, 10, 2), (1.01, 10, 2), (float("nan"), 10, 2), (0.5, 0, 2), (0.5, 10, 3)],
)
def test_nms_rejects_bad_arguments(iou_threshold: float, max_detections: int, n_scores: int) -> None:
    with pytest.raises(ValueError):
        nms(
            np.array([A, B], np.float32),
            np.ones(n_scores, np.float32),
            np.zeros(2, np.int64),
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )


# --- scale_boxes -----------------------------------------------------------------------------

INPUT = Size(64, 64)
LANDSCAPE = Letterbox(scale=0.5, pad_x=0, pad_y=8, resized=Size(64, 48), padded=INPUT, source=Size(128, 96))
PORTRAIT = Letterbox(scale=0.5, pad_x=8, pad_y=0, resized=Size(48, 64), padded=INPUT, source=Size(96, 128))
# 100 wide, 61 high at r = 0.64 -> 39.04 rows, rounded to 39: rows map back by 61 / 39, not 1 / 0.64
ODD_ROWS = Letterbox(scale=0.64, pad_x=0, pad_y=12, resized=Size(64, 39), padded=INPUT, source=Size(100, 61))


@pytest.mark.parametrize(
    ("box", "lb", "original_size", "expected"),
    [
        pytest.param([16, 24, 48, 40], LANDSCAPE, None, [32, 32, 96, 64], id="landscape"),
        pytest.param([20, 16, 36, 48], PORTRAIT, None, [24, 32, 56, 96], id="portrait"),
        pytest.param([16, 24, 48, 40], LANDSCAPE, Size(128, 96), [32, 32, 96, 64], id="original-size-given"),
        # decoded at 1/4 (JPEG draft): everything times 4
        pytest.param([16, 24, 48, 40], LANDSCAPE, Size(512, 384), [128, 128, 384, 256], id="reduced-decode"),
        # x: -4 -> -8 -> 0 and 70 -> 140 -> 128; y: 0 -> -16 -> 0 and 70 -> 124 -> 96
        pytest.param([-4, 0, 70, 70], LANDSCAPE, None, [0, 0, 128, 96], id="clipped"),
        # the resized strip (rows 12..51) maps onto the whole image height, 0..61
        pytest.param([0, 12, 64, 51], ODD_ROWS, None, [0, 0, 100, 61], id="rounded-resize"),
    ],
)
def test_scale_boxes(
    box: list[float], lb: Letterbox, original_size: Size | None, expected: list[float]
) -> None:
    boxes = np.array([box], dtype=np.float32)
    out = scale_boxes(boxes, lb, original_size=original_size)
    np.testing.assert_allclose(out, [expected])
    assert out.dtype == np.float64
    assert boxes.tolist() == [box]  # input left alone


def test_scale_boxes_empty() -> None:
    assert scale_boxes(np.empty((0, 4), np.float32), LANDSCAPE).shape == (0, 4)


@pytest.mark.parametrize(
    ("decoded", "original_size"),
    [
        (Size(128, 96), Size(128, 96)),  # full decode, landscape
        (Size(96, 128), Size(96, 128)),  # full decode, portrait
        (Size(504, 378), Size(4032, 3024)),  # 1/8 draft of a 12 MP photo
        (Size(378, 505), Size(3023, 4033)),  # 1/8 draft rounded up on odd sizes: factors differ per axis
        (Size(100, 61), Size(100, 61)),  # odd padding and a rounded resize
    ],
)
def test_scale_boxes_round_trip(decoded: Size, original_size: Size) -> None:
    ow, oh = original_size
    _, lb = letterbox(np.zeros((*decoded.hw, 3), dtype=np.uint8), Size(64, 64), 32)
    assert lb.source == decoded
    rng = np.random.default_rng(1)
    xy1 = rng.uniform(0, 0.5, (20, 2)) * (ow, oh)
    original = np.hstack([xy1, xy1 + rng.uniform(0.1, 0.5, (20, 2)) * (ow, oh)])
    # forward, original -> decoded -> resized -> padded: the per-axis factors compose to resized / original
    rw, rh = lb.resized
    model_input = original * np.tile([rw / ow, rh / oh], 2) + np.tile([lb.pad_x, lb.pad_y], 2)

    back = scale_boxes(model_input, lb, original_size=original_size)
    np.testing.assert_allclose(back, original, rtol=1e-9, atol=1e-6)


def test_decode_multi_label_keeps_every_class_above_threshold() -> None:
    raw = np.zeros((1, 7, 2), dtype=np.float32)
    raw[0, :, 0] = [10, 10, 4, 4, 0.6, 0.3, 0.05]  # two classes above 0.25
    raw[0, :, 1] = [30, 30, 2, 2, 0.1, 0.1, 0.9]
    boxes, scores, classes = decode(raw, conf_threshold=0.25)
    assert classes.tolist() == [0, 2]
    boxes, scores, classes = decode(raw, conf_threshold=0.25, multi_label=True)
    assert sorted(classes.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(scores[np.argsort(classes)], [0.6, 0.3, 0.9], rtol=1e-6)
    np.testing.assert_allclose(boxes[classes == 1][0], [8, 8, 12, 12])


def test_iou_matrix_against_hand_values() -> None:
    iou = iou_matrix(np.array([A, P]), np.array([A, B, C, Q, [5, 5, 5, 5]]))
    # A-B: 9 x 10 / (100 + 100 - 90); A-C: 50 / 150; P or Q inside A: 3 / 100; P-B: 2 / 101; P-Q: 2 / 4;
    # an empty box overlaps nothing
    expected = [[1.0, 90 / 110, 50 / 150, 3 / 100, 0.0], [3 / 100, 2 / 101, 0.0, 0.5, 0.0]]
    np.testing.assert_allclose(iou, expected)
    assert iou_matrix(np.empty((0, 4)), np.array([A])).shape == (0, 1)


def _merge(boxes: list[list[float]], scores: list[float], classes: list[int], threshold: float) -> np.ndarray:
    b = np.array(boxes, np.float32)
    s = np.array(scores, np.float32)
    c = np.array(classes, np.int64)
    keep = nms(b, s, c, iou_threshold=0.45, max_detections=100)
    return merge_boxes(b, s, c, keep, iou_threshold=threshold)


def test_merge_boxes_averages_a_kept_box_with_its_neighbours_by_score() -> None:
    # B overlaps A by 0.82: suppressed, and it pulls A's box 0.8 / (0.9 + 0.8) of the way to itself
    merged = _merge([A, B, FAR1], [0.9, 0.8, 0.5], [0, 0, 0], 0.7)
    shift = 0.8 / 1.7
    np.testing.assert_allclose(merged, [[shift, 0, 10 + shift, 10], FAR1], rtol=1e-6)


@pytest.mark.parametrize(
    ("classes", "threshold", "why"),
    [
        pytest.param([0, 1], 0.7, "a neighbour of another class never counts", id="other-class"),
        pytest.param([0, 0], 0.9, "B's IoU with A, 0.82, is under the threshold", id="below-threshold"),
        pytest.param([0, 0], 1.0, "1 turns merging off", id="off"),
    ],
)
def test_merge_boxes_leaves_a_box_alone(classes: list[int], threshold: float, why: str) -> None:
    merged = _merge([A, B], [0.9, 0.8], classes, threshold)
    assert merged[0].tolist() == A, why


def test_merge_boxes_keeps_the_order_of_keep_and_handles_empty_input() -> None:
    boxes = np.array([A, FAR1, B], np.float32)
    scores = np.array([0.9, 0.95, 0.6], np.float32)
    merged = merge_boxes(boxes, scores, np.zeros(3, np.int64), np.array([1, 0]), iou_threshold=0.7)
    assert merged[0].tolist() == FAR1
    assert merged[1, 0] == pytest.approx(0.6 / 1.5)
    none = merge_boxes(np.empty((0, 4)), np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), iou_threshold=0.7)
    assert none.shape == (0, 4)


@pytest.mark.parametrize(("threshold", "n_classes"), [(1.5, 2), (-0.1, 2), (0.5, 3)])
def test_merge_boxes_rejects_bad_arguments(threshold: float, n_classes: int) -> None:
    with pytest.raises(ValueError):
        merge_boxes(np.array([A, B], np.float32), np.ones(2, np.float32), np.zeros(n_classes, np.int64),
                    np.array([0]), iou_threshold=threshold)
