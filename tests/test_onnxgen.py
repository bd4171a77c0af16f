"""The colour-keyed stand-in model (``tests.onnxgen.make_colour_detector_onnx``) through vipare's own code.

The service tests trust it to find a deposit exactly where a photo has a magenta square; here it goes
through ``Pipeline`` (decode, orient, letterbox, run, decode, NMS, map back) like the shipped model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.imagegen import make_photo, pattern_array
from tests.onnxgen import COLOUR_SCORE, CYAN, MAGENTA, Colour, make_colour_detector_onnx
from vipare.detection import Detector
from vipare.pipeline import Pipeline
from vipare.settings import Settings

Squares = dict[tuple[int, int], Colour]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    # What the stand-in finds in one pass over the whole photo; tests/test_tiles.py covers the second look.
    settings = Settings(
        model_path=make_colour_detector_onnx(tmp_path_factory.mktemp("model") / "colour.onnx"), intra_op_threads=1,
        tiles_when_empty=False,
    )
    return Pipeline(Detector.from_settings(settings), settings)


def photo(squares: Squares, *, size: tuple[int, int] = (640, 480), side: int = 80, **kwargs: Any) -> bytes:
    """A gradient photo of ``size`` with ``side``-pixel squares at grid cells ``(column, row)``."""
    array = pattern_array(size)
    for (column, row), colour in squares.items():
        array[side * row : side * (row + 1), side * column : side * (column + 1)] = colour
    return make_photo(array=array, quality=92, **kwargs)


def found(pipeline: Pipeline, data: bytes) -> list[tuple[str, tuple[float, ...]]]:
    result = pipeline.analyze(data)
    assert all(d.score == pytest.approx(COLOUR_SCORE) for d in result.detections)
    return sorted((d.label, tuple(round(v, 3) for v in d.box)) for d in result.detections)


def test_the_model_is_a_detector_of_the_project_classes(pipeline: Pipeline) -> None:
    info = pipeline.detector.info
    assert info.classes == ["dumped_waste", "overflowing_bin", "bin"]
    assert tuple(pipeline.detector.input_size) == (256, 256)


@pytest.mark.parametrize(
    ("squares", "kwargs", "expected"),
    [
        ({(3, 2): MAGENTA}, {}, [("dumped_waste", (240, 160, 320, 240))]),
        ({(0, 0): MAGENTA, (7, 5): CYAN}, {}, [("bin", (560, 400, 640, 480)), ("dumped_waste", (0, 0, 80, 80))]),
        ({(3, 2): MAGENTA}, {"fmt": "PNG"}, [("dumped_waste", (240, 160, 320, 240))]),
        ({(3, 2): MAGENTA}, {"fmt": "HEIF"}, [("dumped_waste", (240, 160, 320, 240))]),
        # Stored 640 x 480, shown turned 90 degrees clockwise (480 x 640): the square turns with it.
        ({(3, 2): MAGENTA}, {"orientation": 6}, [("dumped_waste", (240, 240, 320, 320))]),
        # Twice the size, read through JPEG draft mode: squares of 160 pixels, boxes in full-size pixels.
        ({(5, 1): MAGENTA}, {"size": (1280, 960), "side": 160}, [("dumped_waste", (800, 160, 960, 320))]),
        ({}, {}, []),
    ],
    ids=["one deposit", "deposit and bin", "png", "heif", "orientation 6", "draft decode", "nothing"],
)
def test_a_square_of_a_key_colour_is_found_where_it_is(
    pipeline: Pipeline, squares: Squares, kwargs: dict[str, Any], expected: list[tuple[str, tuple[int, ...]]]
) -> None:
    assert found(pipeline, photo(squares, **kwargs)) == [(label, tuple(map(float, box))) for label, box in expected]


@pytest.mark.parametrize("pattern", ["gradient", "flat", "noise"])
def test_ordinary_pictures_have_nothing(pipeline: Pipeline, pattern: str) -> None:
    assert found(pipeline, make_photo("JPEG", (640, 480), pattern=pattern)) == []  # type: ignore[arg-type]


def test_a_square_off_the_grid_is_not_found_at_full_score(pipeline: Pipeline) -> None:
    """Half a cell of magenta is not enough: the service tests put their squares on the grid."""
    array = pattern_array((640, 480))
    array[160:240, 280:360] = MAGENTA  # half in cell (3, 2), half in (4, 2)
    result = pipeline.analyze(make_photo(array=array, quality=92))
    assert result.detections == []


def test_the_plain_gradient_of_the_service_tests_has_nothing(pipeline: Pipeline) -> None:
    array = np.zeros((240, 320, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, 320, dtype=np.uint8)[np.newaxis, :]
    for green in (0, 128, 255):
        array[..., 1] = green
        assert pipeline.analyze(make_photo("JPEG", array=array)).detections == []


def test_key_colours_must_name_classes_of_the_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="classes the model does not have"):
        make_colour_detector_onnx(tmp_path / "m.onnx", keys={"sofa": MAGENTA})
