"""Size: width and height by name, numpy's (height, width) only on the way to and from an array."""

from __future__ import annotations

import numpy as np
import pytest

import vipare
from vipare.size import Size


def test_fields_are_width_then_height() -> None:
    size = Size(640, 480)
    assert (size.width, size.height) == (640, 480)
    assert Size(width=640, height=480) == size
    width, height = size  # unpacks like Pillow's Image.size
    assert (width, height) == (640, 480)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((480, 640, 3), Size(640, 480)),  # landscape RGB
        ((640, 480, 3), Size(480, 640)),  # portrait RGB
        ((3, 1000), Size(1000, 3)),  # grey, no channel axis
    ],
)
def test_of_reads_an_array_shape(shape: tuple[int, ...], expected: Size) -> None:
    size = Size.of(np.zeros(shape, dtype=np.uint8))
    assert size == expected
    assert type(size.width) is int and type(size.height) is int


def test_hw_is_numpy_order_and_round_trips() -> None:
    size = Size(640, 384)
    assert size.hw == (384, 640)
    array = np.zeros((*size.hw, 3), dtype=np.uint8)
    assert array.shape == (384, 640, 3)
    assert Size.of(array) == size


@pytest.mark.parametrize(("size", "long_side"), [(Size(640, 480), 640), (Size(480, 640), 640), (Size(7, 7), 7)])
def test_long_side(size: Size, long_side: int) -> None:
    assert size.long_side == long_side


@pytest.mark.parametrize(
    ("size", "factor", "expected"),
    [
        (Size(4032, 3024), 0.125, Size(504, 378)),
        (Size(640, 480), 2.0, Size(1280, 960)),
        (Size(125, 61), 0.5, Size(62, 30)),  # 62.5 and 30.5 round half to even, as Python's round()
        (Size(1000, 3), 0.064, Size(64, 1)),  # 0.19 rounds to 0: kept at one pixel
        (Size(5, 5), 0.0, Size(1, 1)),
    ],
)
def test_scaled_rounds_each_side_and_keeps_one_pixel(size: Size, factor: float, expected: Size) -> None:
    assert size.scaled(factor) == expected


def test_size_is_public() -> None:
    assert vipare.Size is Size and "Size" in vipare.__all__
