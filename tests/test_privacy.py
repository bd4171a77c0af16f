"""vipare.privacy: the region rules and the blur, on hand-made arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vipare.blur import blur, blur_regions
from vipare.privacy import (
    PLATE_TOP,
    PrivacyDetector,
    Region,
    grow_box,
    head_region,
    outside,
    plate_region,
    spare,
)
from vipare.settings import Settings
from vipare.size import Size


def _sharpness(patch: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _checkerboard(height: int, width: int, cell: int = 3) -> np.ndarray:
    ys, xs = np.indices((height, width))
    board = (((ys // cell) + (xs // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


def test_a_blurred_box_loses_its_high_frequencies_and_nothing_else_changes() -> None:
    image = _checkerboard(120, 160)
    box = (40.0, 30.0, 100.0, 90.0)
    out = blur_regions(image, [box])
    assert _sharpness(out[30:90, 40:100]) < 0.02 * _sharpness(image[30:90, 40:100])
    outside = np.ones(image.shape[:2], bool)
    outside[30:90, 40:100] = False
    assert np.array_equal(out[outside], image[outside])
    assert np.array_equal(image, _checkerboard(120, 160))  # the input is left alone


@pytest.mark.parametrize(
    "box",
    [
        (-20.0, -10.0, 30.0, 25.0),  # partly outside: clipped
        (150.0, 110.0, 400.0, 300.0),
        (50.0, 50.0, 50.5, 80.0),  # less than 2 pixels wide: skipped
        (200.0, 200.0, 300.0, 300.0),  # wholly outside
    ],
)
def test_boxes_at_or_beyond_the_edges_are_clipped_or_skipped(box: tuple[float, float, float, float]) -> None:
    image = _checkerboard(120, 160)
    out = blur_regions(image, [box])
    assert out.shape == image.shape and out.dtype == np.uint8


def test_no_box_gives_an_equal_copy() -> None:
    image = _checkerboard(20, 30)
    assert np.array_equal(blur_regions(image, []), image)


def test_cells_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cells"):
        blur_regions(_checkerboard(10, 10), [], cells=0)


@pytest.mark.parametrize(
    ("person", "head"),
    [
        ((10.0, 100.0, 40.0, 250.0), (10.0, 100.0, 40.0, 130.0)),  # standing: a fifth of the height
        ((0.0, 0.0, 100.0, 100.0), (0.0, 0.0, 100.0, 60.0)),  # cut by the frame: 0.6 of the width
        ((0.0, 0.0, 100.0, 40.0), (0.0, 0.0, 100.0, 40.0)),  # lying or cropped: never past the box
    ],
)
def test_the_head_is_the_top_of_a_person(person: tuple[float, ...], head: tuple[float, ...]) -> None:
    assert head_region(person) == pytest.approx(head)  # type: ignore[arg-type]


def test_the_plate_band_is_the_lower_part_of_a_vehicle() -> None:
    assert plate_region((100.0, 200.0, 300.0, 300.0)) == pytest.approx((100.0, 245.0, 300.0, 300.0))


def test_a_grown_box_stays_in_the_image() -> None:
    assert grow_box((10.0, 10.0, 30.0, 50.0), 0.25, Size(35, 55)) == pytest.approx((5.0, 0.0, 35.0, 55.0))


@pytest.mark.real_model
def test_the_shipped_detectors_load_and_find_nothing_on_a_blank_photo() -> None:
    settings = Settings()
    if not (settings.face_model_path.exists() and settings.privacy_model_path.exists()):
        pytest.skip("the privacy detectors are not in weights/")
    detector = PrivacyDetector.from_settings(settings.model_copy(update={"intra_op_threads": 1}))
    assert detector.find(np.full((480, 640, 3), 128, np.uint8)) == []


@pytest.mark.parametrize(
    ("box", "spared", "area"),
    [
        ((0.0, 0.0, 10.0, 10.0), [(20.0, 20.0, 30.0, 30.0)], 100.0),  # apart: whole
        ((0.0, 0.0, 10.0, 10.0), [(5.0, 5.0, 15.0, 15.0)], 75.0),  # a corner cut
        ((0.0, 0.0, 10.0, 10.0), [(2.0, 2.0, 8.0, 8.0)], 64.0),  # a hole: four parts
        ((0.0, 0.0, 10.0, 10.0), [(-1.0, -1.0, 11.0, 11.0)], 0.0),  # covered: nothing left
        ((0.0, 0.0, 10.0, 10.0), [(0.0, 0.0, 10.0, 5.0), (0.0, 5.0, 5.0, 10.0)], 25.0),  # two, in turn
    ],
)
def test_outside_leaves_the_spared_boxes_out(
    box: tuple[float, float, float, float], spared: list[tuple[float, float, float, float]], area: float
) -> None:
    parts = outside(box, spared)
    assert sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in parts) == pytest.approx(area)
    for part in parts:
        for s in spared:
            assert min(part[2], s[2]) <= max(part[0], s[0]) or min(part[3], s[3]) <= max(part[1], s[1])


def test_heads_and_plates_are_cut_around_a_deposit_and_faces_of_persons_are_not() -> None:
    deposit = (100.0, 100.0, 300.0, 300.0)
    regions = [
        Region("plate", (50.0, 200.0, 150.0, 260.0), 0.9),
        Region("head", (280.0, 40.0, 340.0, 120.0), 0.9),
        Region("face", (285.0, 60.0, 325.0, 110.0), 0.9),  # touches a head
        Region("face", (120.0, 120.0, 140.0, 140.0), 0.7),  # small beside the deposit
        Region("face", (110.0, 130.0, 270.0, 290.0), 0.6),  # most of the deposit, no person: litter
    ]
    kept = spare(regions, [deposit])
    faces = [r.box for r in kept if r.kind == "face"]
    assert faces == [(285.0, 60.0, 325.0, 110.0), (120.0, 120.0, 140.0, 140.0)]
    for region in kept:
        if region.kind != "face":
            x1, y1, x2, y2 = region.box
            assert x2 <= 100 or x1 >= 300 or y2 <= 100 or y1 >= 300
    assert spare(regions, []) == regions


def test_a_part_cut_around_a_deposit_is_blurred_as_its_whole_region() -> None:
    """A thin strip left of a plate band beside a deposit gets the band's cells, not cells of its own size."""
    image = _checkerboard(200, 300)
    band = Region("plate", (0.0, 110.0, 300.0, 200.0), 0.9)
    parts = spare([band], [(0.0, 100.0, 290.0, 200.0)])  # a deposit over all but a 10-pixel strip
    assert [p.box for p in parts] == [(290.0, 110.0, 300.0, 200.0)] and parts[0].whole == band.box
    strip = (slice(110, 200), slice(290, 300))
    assert _sharpness(blur(image, parts)[strip]) < 0.02 * _sharpness(image[strip])
    alone = Region("plate", parts[0].box, 0.9)  # sized on its own 10 pixels, it would keep more detail
    assert _sharpness(blur(image, parts)[strip]) < _sharpness(blur(image, [alone])[strip])


def test_blur_copies_the_photo_unless_told_to_blur_it_in_place() -> None:
    regions = [Region("face", (20.0, 20.0, 80.0, 80.0), 0.9)]
    image = _checkerboard(100, 120)
    copied = blur(image, regions)
    assert copied is not image and np.array_equal(image, _checkerboard(100, 120))
    same = blur(image, regions, in_place=True)
    assert same is image and np.array_equal(image, copied)  # the same pixels as the copy's
    assert _sharpness(image[20:80, 20:80]) < 0.02 * _sharpness(_checkerboard(100, 120)[20:80, 20:80])


# The stored pixels of an upright picture under each EXIF orientation: exif_transpose's inverse.
_STORED_AS = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
              8: lambda a: np.rot90(a, -1)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_stored_turned_is_blurred_as_its_upright_picture_would_be(orientation: int) -> None:
    """Regions are upright; the stored pixels are blurred where the viewer will show them, cells sized upright."""
    from PIL import Image, ImageOps

    upright = np.random.default_rng(orientation).integers(0, 256, (120, 180, 3), dtype=np.uint8)
    vehicle = (60.0, 0.0, 180.0, 100.0)  # taller than wide once turned: the fine cells follow its upright height
    regions = [Region("face", (12.0, 6.0, 48.0, 42.0), 0.9),
               Region("plate", plate_region(vehicle), 0.9)]
    stored = np.ascontiguousarray(_STORED_AS[orientation](upright))
    picture = Image.fromarray(stored)
    picture.getexif()[0x0112] = orientation
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(picture)), upright)  # stored as a camera would
    for fine in (False, True):
        blurred = Image.fromarray(blur(stored, regions, fine_plates=fine, orientation=orientation))
        blurred.getexif()[0x0112] = orientation
        seen = np.asarray(ImageOps.exif_transpose(blurred)).astype(int)
        assert np.abs(seen - blur(upright, regions, fine_plates=fine)).max() <= 1


def test_fine_plate_cells_are_about_half_a_plate_and_faces_stay_coarse() -> None:
    image = _checkerboard(400, 400, cell=2)
    vehicle = (0.0, 0.0, 400.0, 400.0)
    band = Region("plate", plate_region(vehicle), 0.9)
    face = Region("face", (0.0, 0.0, 120.0, 120.0), 0.9)
    coarse, fine = blur(image, [band, face]), blur(image, [band, face], fine_plates=True)
    rows = slice(int(PLATE_TOP * 400), 400)
    # finer cells keep more of the band's variation, but cells of 0.045 of the vehicle's height
    # (18 pixels here, a plate being about 0.1 of it) still leave nothing of 2-pixel details
    assert _sharpness(coarse[rows]) < _sharpness(fine[rows]) < 0.02 * _sharpness(image[rows])
    assert np.array_equal(coarse[:120, :120], fine[:120, :120])


def test_fine_plate_cells_leave_no_character_of_a_plate() -> None:
    """A plate a tenth of its car's height, its characters two thirds of the plate: nothing left to read."""
    car = 300
    image = np.full((car, 2 * car, 3), 120, np.uint8)
    plate_h = car // 10
    x1, y1 = car - 2 * plate_h, int(0.75 * car)
    cv2.rectangle(image, (x1, y1), (x1 + 4 * plate_h, y1 + plate_h), (235, 235, 235), -1)
    cv2.putText(image, "AB 123", (x1 + 3, y1 + plate_h - 6), cv2.FONT_HERSHEY_SIMPLEX, plate_h / 40, (20, 20, 20), 2)
    band = Region("plate", plate_region((0.0, 0.0, 2.0 * car, float(car))), 0.9)
    out = blur(image, [band], fine_plates=True)
    plate = (slice(y1, y1 + plate_h), slice(x1, x1 + 4 * plate_h))
    assert _sharpness(out[plate]) < 0.1 * _sharpness(image[plate])
