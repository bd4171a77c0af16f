"""The ONNX detector end to end on tiny stand-in graphs (no real weights)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.onnxgen import head_output, make_detector_onnx, make_wrong_output_onnx
from vipare import detection as detection_module
from vipare.detection import Detector
from vipare.errors import ModelError, ModelMetadataError
from vipare.model_metadata import parse_metadata
from vipare.results import Detection
from vipare.settings import Settings
from vipare.size import Size

NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}
THRESHOLDS = {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100, "intra_op_threads": 1}


def load(path: Path, overrides: dict[str, float] | None = None, *, warmup: bool = True) -> Detector:
    """A detector with the test thresholds, some replaced by ``overrides``."""
    args = THRESHOLDS | (overrides or {})
    return Detector(
        path,
        conf_threshold=args["conf_threshold"],
        iou_threshold=args["iou_threshold"],
        max_detections=int(args["max_detections"]),
        intra_op_threads=int(args["intra_op_threads"]),
        warmup=warmup,
    )


# Boxes in pixels of the 64 x 64 model input: ((x1, y1, x2, y2), class id, score).
BOX_A = ((16, 24, 48, 40), 0, 0.9)
BOX_A_SHADOW = ((17, 24, 49, 40), 0, 0.6)  # IoU with A = 31 * 16 / (33 * 16) = 0.94: suppressed
BOX_C = ((8, 8, 24, 16), 2, 0.5)
BOX_LOW = ((40, 40, 60, 60), 1, 0.1)  # under conf_threshold


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny-yolo.onnx"
    raw = head_output(3, [BOX_A, BOX_A_SHADOW, BOX_C, BOX_LOW])
    make_detector_onnx(path, names=NAMES, raw=raw, metadata={"vipare_taxonomy_version": "1"})
    return path


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    return load(model_path)


def _boxes(detections: list[Detection]) -> list[tuple[float, ...]]:
    return [tuple(round(v, 6) for v in d.box) for d in detections]


def test_all_names_exist() -> None:
    assert all(hasattr(detection_module, name) for name in detection_module.__all__)


@pytest.mark.parametrize(
    ("image_hw", "original_size", "expected"),
    [
        # 96 x 128: scale 0.5, 8 rows of padding on top. A: x 16/0.5, 48/0.5; y (24-8)/0.5, (40-8)/0.5
        pytest.param((96, 128), None, [(32, 32, 96, 64), (16, 0, 48, 16)], id="landscape"),
        # 128 x 96: scale 0.5, 8 columns on the left. A: x (16-8)/0.5, (48-8)/0.5; y 24/0.5, 40/0.5
        pytest.param((128, 96), None, [(16, 48, 80, 80), (0, 16, 32, 32)], id="portrait"),
        # the landscape array is a 1/4 decode of a 512 x 384 photo: everything times 4
        pytest.param((96, 128), Size(512, 384), [(128, 128, 384, 256), (64, 0, 192, 64)], id="reduced-decode"),
    ],
)
def test_boxes_come_back_in_original_pixels(
    detector: Detector,
    image_hw: tuple[int, int],
    original_size: Size | None,
    expected: list[tuple[float, ...]],
) -> None:
    image = np.zeros((*image_hw, 3), dtype=np.uint8)
    detections = detector.detect(image, original_size=original_size)

    assert _boxes(detections) == expected
    assert [d.label for d in detections] == ["dumped_waste", "bin"]
    assert [d.class_id for d in detections] == [0, 2]
    assert [d.deposit for d in detections] == [True, False]
    assert detections[0].score == pytest.approx(0.9)
    # A covers 32 x 16 of the 64 x 48 picture area, whatever the decode size
    assert detections[0].area_fraction == pytest.approx(1 / 6)


def test_stages_compose_to_detect(detector: Detector) -> None:
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    blob, lb = detector.preprocess(image)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    raw = detector.run(blob)
    assert raw.shape == (1, 7, 8)
    bare = detector.session.run(None, {detector.session.get_inputs()[0].name: blob})[0]
    np.testing.assert_array_equal(raw, bare)
    staged = detector.postprocess(raw, lb)
    assert staged == detector.detect(image)


@pytest.mark.parametrize(
    ("overrides", "expected_labels"),
    [
        ({"conf_threshold": 0.95}, []),
        ({"conf_threshold": 0.05}, ["dumped_waste", "bin", "overflowing_bin"]),
        ({"iou_threshold": 0.95}, ["dumped_waste", "dumped_waste", "bin"]),
        ({"max_detections": 1}, ["dumped_waste"]),
    ],
)
def test_thresholds_are_parameters(
    model_path: Path, overrides: dict[str, float], expected_labels: list[str]
) -> None:
    detector = load(model_path, overrides, warmup=False)
    detections = detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
    assert [d.label for d in detections] == expected_labels


def test_dynamic_input_model_pads_to_stride_only(tmp_path: Path) -> None:
    # 60 x 128 -> 30 x 64 resized, padded 1 / 1 to a 32 x 64 input (Ultralytics' rect inference).
    path = tmp_path / "dynamic.onnx"
    make_detector_onnx(path, names=NAMES, raw=head_output(3, [((16, 9, 48, 25), 1, 0.8)]), dynamic=True)
    detector = load(path)
    image = np.zeros((60, 128, 3), dtype=np.uint8)
    blob, _ = detector.preprocess(image)
    assert blob.shape == (1, 3, 32, 64)
    assert _boxes(detector.detect(image)) == [(32, 16, 96, 48)]


def test_info_identifies_the_weights(detector: Detector, model_path: Path) -> None:
    info = detector.info
    assert info.name == "tiny-yolo"
    assert info.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert info.classes == ["dumped_waste", "overflowing_bin", "bin"]
    assert info.input_size == (64, 64) == detector.input_size
    assert isinstance(detector.input_size, Size)
    assert info.stride == 32
    assert info.version == "8.3.0"
    assert info.taxonomy_version == "1"
    assert detector.names == ("dumped_waste", "overflowing_bin", "bin")


def test_a_wide_model_input_has_its_width_and_height_by_name(tmp_path: Path) -> None:
    """A 96 wide, 64 high input (metadata ``imgsz`` [64, 96]): the blob is 64 rows of 96, boxes map back."""
    path = tmp_path / "wide.onnx"
    # the 192 x 128 photo fills the input at scale 0.5; the box covers its left half
    make_detector_onnx(path, names=NAMES, raw=head_output(3, [((0, 0, 48, 64), 0, 0.9)]), imgsz=(64, 96))
    detector = load(path)
    assert detector.input_size == Size(width=96, height=64)
    assert detector.info.input_size == (64, 96)  # stored and served as [height, width], like the metadata
    image = np.zeros((128, 192, 3), dtype=np.uint8)
    blob, lb = detector.preprocess(image)
    assert blob.shape == (1, 3, 64, 96)
    assert (lb.padded, lb.source, lb.pad_x, lb.pad_y) == (Size(96, 64), Size(192, 128), 0, 0)
    assert _boxes(detector.detect(image)) == [(0, 0, 96, 128)]


def test_from_settings(model_path: Path) -> None:
    settings = Settings(model_path=model_path, conf_threshold=0.55, max_detections=7, intra_op_threads=1)
    detector = Detector.from_settings(settings)
    assert (detector.conf_threshold, detector.iou_threshold, detector.max_detections) == (0.55, 0.45, 7)
    assert [d.label for d in detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))] == ["dumped_waste"]
    assert detector.merge_iou == Settings().box_merge_iou < 1.0


def test_from_settings_loads_another_file_with_the_same_settings(model_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    make_detector_onnx(other, names=NAMES, raw=head_output(3, [BOX_C]))
    settings = Settings(model_path=model_path, conf_threshold=0.3, box_merge_iou=0.8, intra_op_threads=1)
    detector = Detector.from_settings(settings, model_path=other, warmup=False)
    assert (detector.info.name, detector.conf_threshold, detector.merge_iou) == ("other", 0.3, 0.8)
    assert [d.label for d in detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))] == ["bin"]


@pytest.mark.parametrize(
    ("merge_iou", "expected"),
    [
        # A's shadow (IoU 0.94, score 0.6) pulls A's box 0.6 / 1.5 of a pixel to the right
        pytest.param(0.7, [(16.4, 24, 48.4, 40), (8, 8, 24, 16)], id="merged"),
        pytest.param(0.95, [(16, 24, 48, 40), (8, 8, 24, 16)], id="shadow-below-threshold"),
        pytest.param(1.0, [(16, 24, 48, 40), (8, 8, 24, 16)], id="off"),
    ],
)
def test_kept_boxes_merge_with_their_class_s_candidates(
    model_path: Path, merge_iou: float, expected: list[tuple[float, ...]]
) -> None:
    detector = Detector(model_path, conf_threshold=0.25, iou_threshold=0.45, max_detections=100,
                        intra_op_threads=1, warmup=False, merge_iou=merge_iou)
    detections = detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
    assert _boxes(detections) == expected
    assert [d.score for d in detections] == pytest.approx([0.9, 0.5])  # scores are never averaged


def test_merge_iou_out_of_range_is_refused(model_path: Path) -> None:
    with pytest.raises(ValueError, match="merge_iou"):
        Detector(model_path, conf_threshold=0.25, iou_threshold=0.45, max_detections=100, intra_op_threads=1,
                 merge_iou=1.5)


def test_warm_up_runs_one_inference_at_load_or_when_called(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[int, ...]] = []
    real_run = ort.InferenceSession.run

    def counted(session: ort.InferenceSession, *args: object, **kwargs: object) -> object:
        feeds = args[1]
        assert isinstance(feeds, dict)
        runs.append(next(iter(feeds.values())).shape)
        return real_run(session, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    load(model_path)
    assert runs == [(1, 3, 64, 64)]
    cold = Detector.from_settings(Settings(model_path=model_path, intra_op_threads=1), warmup=False)
    assert len(runs) == 1
    cold.warm_up()
    assert runs == [(1, 3, 64, 64)] * 2


def test_shared_across_threads(detector: Detector) -> None:
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    expected = detector.detect(image)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: detector.detect(image), range(16)))
    assert all(r == expected for r in results)


@pytest.mark.parametrize(
    "image",
    [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8)],
    ids=["float", "grey", "rgba"],
)
def test_detect_rejects_non_rgb_uint8(detector: Detector, image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        detector.detect(image)


def test_detect_rejects_bad_original_size(detector: Detector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.uint8), original_size=Size(0, 64))


@pytest.mark.parametrize(
    "overrides",
    [
        {"conf_threshold": -0.1},
        {"conf_threshold": 1.5},
        {"iou_threshold": 1.5},
        {"max_detections": 0},
        {"intra_op_threads": -1},
    ],
)
def test_constructor_rejects_bad_parameters(model_path: Path, overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        load(model_path, overrides)


# --- refusing unusable models ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["names", "imgsz", "stride"])
def test_missing_metadata_is_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "bare.onnx"
    make_detector_onnx(path, names=NAMES, raw=head_output(3, []), omit=[key])
    with pytest.raises(ModelMetadataError, match=rf"'{key}'.*re-export"):
        load(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"certainly not a protobuf \x00\xff" * 10, "not a usable ONNX model"),
    ],
    ids=["empty", "garbage"],
)
def test_unreadable_file_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        load(path)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="cannot read"):
        load(tmp_path)


def test_output_not_matching_names_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.onnx"
    make_wrong_output_onnx(path, names=NAMES)
    with pytest.raises(ModelError, match="1 x 7 x anchors"):
        load(path)


def test_postprocess_refuses_a_wrong_raw_output(detector: Detector) -> None:
    _, lb = detector.preprocess(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ModelError, match="1 x 7 x anchors"):
        detector.postprocess(np.zeros((1, 8, 5), np.float32), lb)


def test_input_size_disagreeing_with_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.onnx"
    make_detector_onnx(path, names=NAMES, raw=head_output(3, []), metadata={"imgsz": "[96, 96]"})
    with pytest.raises(ModelError, match="metadata 'imgsz'"):
        load(path)


# --- parse_metadata --------------------------------------------------------------------------

GOOD = {"names": "{0: 'dumped_waste', 1: 'bin'}", "imgsz": "[640, 480]", "stride": "32"}


@pytest.mark.parametrize(
    ("overrides", "names", "imgsz", "stride"),
    [
        ({}, ("dumped_waste", "bin"), (640, 480), 32),
        ({"imgsz": "640"}, ("dumped_waste", "bin"), (640, 640), 32),
        ({"imgsz": "[320]"}, ("dumped_waste", "bin"), (320, 320), 32),
        ({"names": '{"1": "b", "0": "a"}'}, ("a", "b"), (640, 480), 32),  # JSON, any order
        ({"names": "['a', 'b', 'c']"}, ("a", "b", "c"), (640, 480), 32),
        ({"stride": "32.0"}, ("dumped_waste", "bin"), (640, 480), 32),
    ],
)
def test_parse_metadata(
    overrides: dict[str, str], names: tuple[str, ...], imgsz: tuple[int, int], stride: int
) -> None:
    meta = parse_metadata(GOOD | overrides | {"version": "8.3.227"})
    height, width = imgsz
    assert (meta.names, meta.input_size, meta.stride) == (names, Size(width, height), stride)
    assert meta.version == "8.3.227"
    assert meta.taxonomy_version is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"names": "__import__('os').getcwd()"}, "not a literal"),  # never evaluated
        ({"names": "{1: 'a', 2: 'b'}"}, "0..n-1"),
        ({"names": "{}"}, "0..n-1"),
        ({"names": "{0: 3}"}, "0..n-1"),
        ({"names": "'abc'"}, "0..n-1"),
        ({"imgsz": "[640, 480, 3]"}, "imgsz"),
        ({"imgsz": "[630, 640]"}, "multiples of stride"),
        ({"imgsz": "[0, 640]"}, "imgsz"),
        ({"stride": "0"}, "stride"),
        ({"stride": "True"}, "stride"),
        ({"stride": "'32'"}, "stride"),
        ({"task": "segment"}, "detection"),
    ],
)
def test_parse_metadata_refuses(overrides: dict[str, str], match: str) -> None:
    with pytest.raises(ModelMetadataError, match=match):
        parse_metadata(GOOD | overrides)
