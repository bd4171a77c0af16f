"""Photo intake: formats, EXIF orientation, JPEG draft mode, limits and damaged files."""

from __future__ import annotations

import functools
import hashlib
import io
import random
import resource
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageOps
from PIL.ExifTags import GPS
from PIL.TiffImagePlugin import IFDRational

from tests.imagegen import make_photo, make_png_bomb, pattern_array, truncate
from vipare import intake
from vipare.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from vipare.imaging import DecodedImage, load_image
from vipare.intake import heif_supported
from vipare.size import Size

needs_heif = pytest.mark.skipif(not heif_supported(), reason="needs pillow-heif (the vipare[heic] extra)")
FORMATS = ["JPEG", "PNG", "WEBP", pytest.param("HEIF", marks=needs_heif)]

METZ = (49.1193, 6.1757)
SYDNEY = (-33.8688, 151.2093)
NEW_YORK = (40.7128, -74.0060)
RIO = (-22.9068, -43.1729)


@functools.cache
def big_jpeg(orientation: int | None = None) -> bytes:
    """A 4032x3024 phone-sized JPEG (stored size), built once per test session."""
    return make_photo("JPEG", (4032, 3024), orientation=orientation, quality=80)


# --------------------------------------------------------------------------------------------------
# GPS, capture time and file facts


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("place", [METZ, SYDNEY, NEW_YORK, RIO], ids=["metz", "sydney", "new-york", "rio"])
def test_gps_round_trip(fmt: str, place: tuple[float, float]) -> None:
    image = load_image(make_photo(fmt, (64, 48), lat=place[0], lon=place[1]))
    assert image.gps is not None
    assert image.gps.lat == pytest.approx(place[0], abs=1e-6)
    assert image.gps.lon == pytest.approx(place[1], abs=1e-6)
    assert image.info.format == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_facts_and_capture_time(fmt: str) -> None:
    taken = datetime(2024, 5, 17, 14, 3, 22, 250000, tzinfo=timezone(timedelta(hours=2)))
    data = make_photo(fmt, (64, 48), captured_at=taken)
    info = load_image(data).info
    assert (info.width, info.height, info.orientation) == (64, 48, 1)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert info.captured_at == taken
    assert info.captured_at is not None and info.captured_at.utcoffset() == timedelta(hours=2)


def test_a_sha256_the_caller_computed_is_not_computed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_photo("JPEG", (64, 48))
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(hashlib, "sha256", lambda *_: pytest.fail("hashed again"))
    assert load_image(data, sha256=digest).info.sha256 == digest


@pytest.mark.parametrize(
    ("captured_at", "expected"),
    [
        (datetime(2023, 1, 2, 3, 4, 5), datetime(2023, 1, 2, 3, 4, 5)),  # no offset: naive
        (datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            datetime(2023, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
            datetime(2023, 1, 2, 6, 34, 5, tzinfo=UTC),
        ),
        (None, None),
    ],
)
def test_capture_time_offsets(captured_at: datetime | None, expected: datetime | None) -> None:
    assert load_image(make_photo("JPEG", captured_at=captured_at)).info.captured_at == expected


def test_blank_capture_time_is_none() -> None:
    from PIL.ExifTags import IFD, Base

    exif = Image.Exif()
    exif[IFD.Exif] = {Base.DateTimeOriginal: "    :  :     :  :  "}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif.tobytes())
    assert load_image(buffer.getvalue()).info.captured_at is None


def test_gps_details_from_a_file() -> None:
    when = datetime(2024, 5, 17, 12, 3, 4, 500000, tzinfo=UTC)
    image = load_image(make_photo("JPEG", lat=31.5, lon=35.5, altitude=-430.5, dop=2.0, gps_time=when))
    assert image.gps is not None
    assert image.gps.altitude_m == pytest.approx(-430.5)
    assert image.gps.accuracy_m == pytest.approx(10.0) and image.gps.accuracy_from == "dop"
    assert image.gps.gps_time == when


# --------------------------------------------------------------------------------------------------
# Orientation


H, W = 32, 48  # stored picture, landscape
MARK = (6, 10)  # (row, column) of the marker's centre in the stored picture


def _expected_position(orientation: int) -> tuple[int, int]:
    """Where a viewer sees stored pixel (r, c), from the EXIF definitions of row 0 / column 0."""
    r, c = MARK
    return {
        1: (r, c),  # row 0 top, column 0 left
        2: (r, W - 1 - c),  # row 0 top, column 0 right
        3: (H - 1 - r, W - 1 - c),  # row 0 bottom, column 0 right
        4: (H - 1 - r, c),  # row 0 bottom, column 0 left
        5: (c, r),  # row 0 left, column 0 top
        6: (c, H - 1 - r),  # row 0 right, column 0 top
        7: (W - 1 - c, H - 1 - r),  # row 0 right, column 0 bottom
        8: (W - 1 - c, r),  # row 0 left, column 0 bottom
    }[orientation]


def _marked() -> NDArray[np.uint8]:
    array = np.full((H, W, 3), 128, dtype=np.uint8)
    r, c = MARK
    array[r - 2 : r + 3, c - 2 : c + 3] = (255, 0, 0)
    return array


def _marker_centre(array: NDArray[np.uint8]) -> tuple[float, float]:
    red = (array[..., 0] > 190) & (array[..., 1] < 90) & (array[..., 2] < 90)
    rows, cols = np.nonzero(red)
    assert rows.size, "marker not found"
    return float(rows.mean()), float(cols.mean())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_marker_lands_where_a_viewer_sees_it(fmt: str, orientation: int) -> None:
    image = load_image(make_photo(fmt, array=_marked(), orientation=orientation, quality=95))
    upright = (W, H) if orientation in (5, 6, 7, 8) else (H, W)
    assert image.array.shape == (*upright, 3)
    assert (image.info.height, image.info.width) == upright
    assert image.info.orientation == orientation
    row, col = _marker_centre(image.array)
    assert (row, col) == pytest.approx(_expected_position(orientation), abs=1.0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    data = make_photo("PNG", (W, H), pattern="noise", orientation=orientation)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(load_image(data).array, np.asarray(reference))


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_invalid_orientation_is_ignored(value: int) -> None:
    image = load_image(make_photo("JPEG", (W, H), orientation=value))
    assert image.array.shape == (H, W, 3) and image.info.orientation == 1


# --------------------------------------------------------------------------------------------------
# JPEG draft mode


def test_draft_decodes_a_phone_photo_near_the_model_size() -> None:
    image = load_image(big_jpeg(), target_size=Size(320, 320))
    assert image.array.shape == (378, 504, 3)  # 1/8 scale: at least 1.5 times the 320x240 letterbox
    assert (image.info.width, image.info.height) == (4032, 3024)
    assert (image.size, image.info.size) == (Size(504, 378), Size(4032, 3024))
    assert image.scale == (8.0, 8.0)


def test_draft_with_orientation_6() -> None:
    image = load_image(big_jpeg(6), target_size=Size(320, 320))
    assert image.array.shape == (504, 378, 3)
    assert (image.info.width, image.info.height) == (3024, 4032)
    assert image.info.orientation == 6
    assert image.scale == (8.0, 8.0)


def test_photo_twice_the_model_size_decodes_in_full() -> None:
    image = load_image(make_photo("JPEG", (640, 640)), target_size=Size(320, 320))
    assert image.array.shape == (640, 640, 3)


@pytest.mark.parametrize(
    ("orientation", "target", "oversample", "decoded"),
    [
        (None, Size(320, 320), 1, Size(504, 378)),  # letterbox 320x240 -> 1/8
        (None, Size(320, 320), 2, Size(1008, 756)),  # twice that -> 1/4
        (None, Size(640, 640), 1, Size(1008, 756)),
        (None, Size(640, 640), 2, Size(2016, 1512)),  # 1280x960 -> 1/2
        (None, Size(1280, 1280), 2, Size(4032, 3024)),  # even 1/2 would be too small: full size
        (None, Size(640, 640), 1.5, Size(1008, 756)),  # 960x720 -> 1/4
        (None, Size(4032, 3024), 1, Size(4032, 3024)),  # the model wants full size
        (None, None, 2, Size(4032, 3024)),
        # a wide model input, 640 wide and 384 high (in numpy's order, shape (384, 640))
        (None, Size(640, 384), 1, Size(1008, 756)),  # 4032x3024 into 640x384: letterbox 512x384 -> 1/4
        (6, Size(640, 384), 1, Size(378, 504)),  # upright 3024x4032 into 640x384: letterbox 288x384 -> 1/8
        (6, Size(640, 384), 2, Size(756, 1008)),
        (8, Size(640, 1024), 1, Size(756, 1008)),  # upright 3024x4032 into 640x1024: letterbox 640x853 -> 1/4
        (8, Size(640, 1024), 2, Size(1512, 2016)),
    ],
)
def test_draft_scale_table(orientation: int | None, target: Size | None, oversample: float, decoded: Size) -> None:
    image = load_image(big_jpeg(orientation), target_size=target, draft_oversample=oversample)
    assert image.size == decoded
    if target is not None:  # the letterbox resize only ever shrinks, by at least `oversample`
        width, height = image.info.size
        ratio = oversample * min(target.height / height, target.width / width)
        assert image.size.height >= min(height, round(height * ratio))
        assert image.size.width >= min(width, round(width * ratio))


@pytest.mark.parametrize("target", [(640, 384), (640,)])
def test_a_bare_tuple_is_refused(target: tuple[int, ...]) -> None:
    with pytest.raises(TypeError, match=r"vipare\.size\.Size\(width, height\)"):
        load_image(big_jpeg(), target_size=target)  # type: ignore[arg-type]


def test_draft_oversample_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draft_oversample"):
        load_image(big_jpeg(), target_size=Size(320, 320), draft_oversample=0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", pytest.param("HEIF", marks=needs_heif)])
def test_other_formats_near_the_model_size_decode_at_full_size(fmt: str) -> None:
    image = load_image(make_photo(fmt, (480, 360)), target_size=Size(320, 320))
    assert image.array.shape == (360, 480, 3) and image.scale == (1.0, 1.0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", pytest.param("HEIF", marks=needs_heif)])
def test_other_formats_are_reduced_right_after_decoding(fmt: str) -> None:
    # 1.5 x the 96 x 72 letterbox is 144 x 108: a factor of 3 keeps 160 x 120, 4 would not.
    data = make_photo(fmt, (480, 360), pattern="noise")
    image = load_image(data, target_size=Size(96, 96))
    assert image.array.shape == (120, 160, 3) and image.scale == (3.0, 3.0)
    assert image.info.size == Size(480, 360)
    full = load_image(data).array.astype(np.float64)
    boxes = full.reshape(120, 3, 160, 3, 3).mean(axis=(1, 3))  # what a 3 x 3 box filter gives
    assert np.abs(image.array - boxes).max() <= 1.0


def test_reduced_png_keeps_orientation_and_composites_alpha_on_white() -> None:
    rgba = np.zeros((300, 600, 4), np.uint8)
    rgba[:, :300] = (255, 0, 0, 255)  # opaque red on the left, fully transparent on the right
    image = load_image(make_photo("PNG", array=rgba, orientation=6), target_size=Size(64, 64))
    assert image.info.size == Size(300, 600)
    assert image.array.shape[0] > image.array.shape[1]  # upright: turned a quarter
    assert tuple(image.array[2, image.array.shape[1] // 2]) == (255, 0, 0)
    assert tuple(image.array[-3, image.array.shape[1] // 2]) == (255, 255, 255)  # no dark fringe from alpha


def test_large_png_is_refused_quickly_and_says_send_a_jpeg() -> None:
    data = make_png_bomb(10000, 10000, mode="L")  # 100 MP: under the 120 MP limit, over the non-JPEG one
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="50 megapixel limit for PNG images") as caught:
        load_image(data, target_size=Size(640, 640))
    assert time.perf_counter() - start < 0.5
    assert "send the photo as a JPEG" in str(caught.value) and "10000 x 10000" in str(caught.value)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000 if sys.platform != "darwin" else True  # maxrss is KiB on Linux


def test_non_jpeg_limit_from_the_caller_and_jpeg_unaffected() -> None:
    with pytest.raises(ImageTooLargeError, match="0.01 megapixel limit for PNG images"):
        load_image(make_photo("PNG", (200, 100)), max_non_jpeg_pixels=10_000)
    with pytest.raises(ImageTooLargeError, match="0.005 megapixel limit for WebP images"):  # a quarter for WebP
        load_image(make_photo("WEBP", (100, 60)), max_non_jpeg_pixels=20_000)
    assert load_image(make_photo("JPEG", (200, 100)), max_non_jpeg_pixels=10_000).info.width == 200


def test_small_jpeg_is_not_reduced() -> None:
    image = load_image(make_photo("JPEG", (800, 600)), target_size=Size(640, 640))
    assert image.array.shape == (600, 800, 3)


@pytest.mark.parametrize("target", [Size(0, 640), Size(-1, 5)])
def test_bad_target_size_is_a_programming_error(target: Size) -> None:
    with pytest.raises(ValueError, match="target_size"):
        load_image(make_photo(), target_size=target)


# --------------------------------------------------------------------------------------------------
# Pixel formats


def _rgba() -> NDArray[np.uint8]:
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[..., 0] = 255  # red everywhere
    array[:4, :, 3] = 255  # top half opaque
    array[4:, :, 3] = 0  # bottom half transparent
    return array


@pytest.mark.parametrize(
    ("fmt", "kwargs", "top_left", "bottom_left"),
    [
        ("PNG", {"array": np.full((8, 8), 200, np.uint8)}, (200, 200, 200), (200, 200, 200)),
        ("PNG", {"array": np.full((8, 8), 255, np.uint8), "mode": "1"}, (255, 255, 255), (255, 255, 255)),
        (
            "PNG",
            {"array": np.full((8, 8, 3), (10, 20, 30), np.uint8), "mode": "P"},
            (10, 20, 30),
            (10, 20, 30),
        ),
        ("PNG", {"array": _rgba()}, (255, 0, 0), (255, 255, 255)),  # alpha composited on white
        ("PNG", {"array": _rgba(), "mode": "LA"}, (76, 76, 76), (255, 255, 255)),
        ("PNG", {"array": np.full((8, 8), 0xAB12, np.uint16)}, (0xAB, 0xAB, 0xAB), (0xAB, 0xAB, 0xAB)),
        ("WEBP", {"array": _rgba(), "quality": 100}, (255, 0, 0), (255, 255, 255)),
        ("JPEG", {"array": np.full((8, 8), 90, np.uint8)}, (90, 90, 90), (90, 90, 90)),
        (
            "JPEG",
            {"array": np.full((8, 8, 3), (200, 40, 40), np.uint8), "mode": "CMYK"},
            (200, 40, 40),
            (200, 40, 40),
        ),
    ],
    ids=["L", "1", "P", "RGBA", "LA", "I;16", "WEBP-RGBA", "JPEG-L", "JPEG-CMYK"],
)
def test_every_mode_becomes_rgb(
    fmt: str, kwargs: dict[str, object], top_left: tuple[int, int, int], bottom_left: tuple[int, int, int]
) -> None:
    array = load_image(make_photo(fmt, **kwargs)).array  # type: ignore[arg-type]
    assert array.shape == (8, 8, 3) and array.dtype == np.uint8
    np.testing.assert_allclose(array[0, 0], top_left, atol=3)
    np.testing.assert_allclose(array[7, 0], bottom_left, atol=3)


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 1
    buffer = io.BytesIO()
    img.save(buffer, "PNG", transparency=1)
    np.testing.assert_array_equal(load_image(buffer.getvalue()).array[0, 0], (255, 255, 255))


@pytest.mark.parametrize("fmt", FORMATS)
def test_array_is_contiguous_read_only_rgb(fmt: str) -> None:
    image = load_image(make_photo(fmt, (40, 30), orientation=6))
    assert isinstance(image, DecodedImage)
    assert image.array.dtype == np.uint8 and image.array.shape == (40, 30, 3)
    assert image.array.flags.c_contiguous and not image.array.flags.writeable


def test_mpo_jpeg_reads_as_jpeg() -> None:
    first, second = Image.fromarray(pattern_array((64, 48))), Image.new("RGB", (32, 24))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    image = load_image(buffer.getvalue(), target_size=Size(16, 16))
    assert image.info.format == "JPEG" and (image.info.width, image.info.height) == (64, 48)


# --------------------------------------------------------------------------------------------------
# Bad input: each row ends in its specific error, or in "no GPS"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


GpsCase = Callable[[Path], "bytes | Path"]

BAD_INPUT: list[tuple[str, GpsCase, type[ImageError] | None, str]] = [
    ("empty file", lambda p: b"", EmptyImageError, "empty"),
    ("empty path", lambda p: _write(p, "empty.jpg", b""), EmptyImageError, "empty"),
    (
        "truncated JPEG",
        lambda p: truncate(make_photo("JPEG", (256, 192), pattern="noise")),
        CorruptImageError,
        "cut short",
    ),
    ("JPEG cut in its header", lambda p: make_photo("JPEG")[:40], CorruptImageError, "cut short"),
    (
        "truncated PNG",
        lambda p: truncate(make_photo("PNG", pattern="noise"), 0.7),
        CorruptImageError,
        "cut short",
    ),
    (
        "truncated WebP",
        lambda p: truncate(make_photo("WEBP", pattern="noise")),
        CorruptImageError,
        "cut short",
    ),
    (
        "text file named .jpg",
        lambda p: _write(p, "photo.jpg", b"just some notes\n" * 20),
        UnsupportedImageError,
        "send a JPEG, PNG, WebP or HEIC photo",
    ),
    (
        "GIF",
        lambda p: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        UnsupportedImageError,
        "JPEG, PNG, WebP or HEIC",
    ),
    ("30000x30000 PNG", lambda p: make_png_bomb(), ImageTooLargeError, "resize it below 120 megapixels"),
    (
        "GPS zero denominator",
        lambda p: make_photo(
            lat=49.1,
            lon=6.2,
            raw_gps={GPS.GPSLatitude: (IFDRational(49, 0), IFDRational(7, 1), IFDRational(0, 1))},
        ),
        None,
        "",
    ),
    ("GPS latitude 91", lambda p: make_photo(lat=91.0, lon=6.2), None, ""),
    ("GPS 0/0", lambda p: make_photo(lat=0.0, lon=0.0), None, ""),
    (
        "GPS without N/S",
        lambda p: make_photo(lat=49.1, lon=6.2, raw_gps={GPS.GPSLatitudeRef: None}),
        None,
        "",
    ),
    ("GPS longitude 181", lambda p: make_photo(lat=49.1, lon=181.0), None, ""),
]
if heif_supported():
    BAD_INPUT.append(
        (
            "HEIC named .jpg",
            lambda p: _write(p, "IMG_0001.jpg", make_photo("HEIF", lat=49.1, lon=6.2)),
            None,
            "HEIF",
        )
    )
    BAD_INPUT.append(
        (
            "truncated HEIC",
            lambda p: truncate(make_photo("HEIF", pattern="noise")),
            CorruptImageError,
            "cut short",
        )
    )


@pytest.mark.parametrize(
    ("make", "error", "detail"), [row[1:] for row in BAD_INPUT], ids=[r[0] for r in BAD_INPUT]
)
def test_bad_input(tmp_path: Path, make: GpsCase, error: type[ImageError] | None, detail: str) -> None:
    source = make(tmp_path)
    if error is not None:
        with pytest.raises(error, match=detail):
            load_image(source)
        return
    image = load_image(source)  # decodes fine
    if detail:
        assert image.info.format == detail
        assert image.gps is not None
    else:
        assert image.gps is None  # "no GPS"


def test_png_bomb_fails_fast_with_little_memory() -> None:
    data = make_png_bomb()  # 30000 x 30000: 900 MB once decoded
    assert len(data) < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="900.0 megapixels"):
        load_image(data)
    assert time.perf_counter() - start < 0.5
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000 if sys.platform != "darwin" else True  # maxrss is KiB on Linux


def test_pixel_limit_is_checked_before_pillows_and_silently() -> None:
    data = make_png_bomb(12000, 12000)  # 144 MP: over vipare's 120 MP, over Pillow's 89 MP warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLargeError, match="12000 x 12000 pixels"):
            load_image(data)
    assert caught == []


def test_pixel_limit_from_the_caller() -> None:
    data = make_photo("PNG", (100, 100))
    with pytest.raises(ImageTooLargeError, match="resize it below 0.005 megapixels"):
        load_image(data, max_pixels=5_000)
    assert load_image(data, max_pixels=10_000).info.width == 100


def test_byte_limit_for_bytes() -> None:
    data = make_photo("JPEG", (64, 48))
    with pytest.raises(ImageTooLargeError, match="MB limit"):
        load_image(data, max_bytes=len(data) - 1)
    assert load_image(data, max_bytes=len(data)).info.size_bytes == len(data)


def test_byte_limit_for_a_path_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as file:
        file.write(make_photo("JPEG"))
        file.truncate(4 << 30)  # sparse 4 GiB: reading it would take seconds and gigabytes
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="4294.97 MB|4295.0 MB"):
        load_image(path)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("as_str", [True, False])
def test_path_input(tmp_path: Path, as_str: bool) -> None:
    path = _write(tmp_path, "upload.bin", make_photo("PNG", lat=METZ[0], lon=METZ[1]))
    image = load_image(str(path) if as_str else path)
    assert image.info.format == "PNG" and image.gps is not None


def test_missing_path_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.jpg")


def test_heic_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "_HEIF_AVAILABLE", False)
    heic = (
        make_photo("HEIF")
        if heif_supported()
        else b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    )
    with pytest.raises(UnsupportedImageError, match=r"pip install 'vipare\[heic\]'"):
        load_image(heic)


# --------------------------------------------------------------------------------------------------
# Fuzz: no byte string makes anything but an ImageError escape


def _seeds() -> list[bytes]:
    tags = {"lat": 49.1, "lon": 6.2, "orientation": 6, "captured_at": datetime(2024, 1, 1)}
    seeds = [make_photo(fmt, (24, 16), pattern="noise", **tags) for fmt in ("JPEG", "PNG", "WEBP")]  # type: ignore[arg-type]
    if heif_supported():
        seeds.append(make_photo("HEIF", (24, 16), pattern="noise", lat=49.1, lon=6.2))
    return seeds


def _mutations(seed: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(seed)
        kind = rng.randrange(4)
        if kind == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:  # cut
            del data[rng.randrange(1, len(data)) :]
        elif kind == 2:  # drop a slice
            start = rng.randrange(len(data))
            del data[start : start + rng.randint(1, 64)]
        else:  # insert junk
            start = rng.randrange(len(data))
            data[start:start] = rng.randbytes(rng.randint(1, 64))
        out.append(bytes(data))
    return out


def test_fuzz_never_raises_anything_but_image_errors() -> None:
    rng = random.Random(20240517)
    cases = [rng.randbytes(rng.randrange(0, 600)) for _ in range(100)]
    magics = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x00\x18ftypheic"]
    cases += [magic + rng.randbytes(rng.randrange(0, 300)) for magic in magics for _ in range(20)]
    for seed in _seeds():
        cases += _mutations(seed, rng, 150)
    outcomes: dict[str, int] = {}
    for data in cases:
        try:
            image = load_image(data, target_size=Size(8, 8))
        except ImageError as exc:
            assert str(exc), "every error has a message"
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        else:
            assert image.array.ndim == 3 and image.array.shape[2] == 3
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
    assert outcomes.get("decoded", 0) > 0 and outcomes.get("CorruptImageError", 0) > 0


def test_no_pillow_globals_changed() -> None:
    from PIL import ImageFile

    load_image(make_photo("JPEG"), target_size=Size(16, 16))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert int(1024 * 1024 * 1024 // 4 // 3) == Image.MAX_IMAGE_PIXELS


def test_concurrent_intake_is_quiet_and_correct() -> None:
    from concurrent.futures import ThreadPoolExecutor

    photos = [make_photo("JPEG", (64, 48), orientation=o, lat=METZ[0], lon=METZ[1]) for o in range(1, 9)]
    bomb = make_png_bomb(12000, 12000)

    def work(index: int) -> str:
        if index % 4 == 0:
            with pytest.raises(ImageTooLargeError):
                load_image(bomb)
            return "too large"
        image = load_image(photos[index % 8], target_size=Size(16, 16))
        assert image.gps is not None and image.info.orientation == index % 8 + 1
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(work, range(40)))
    assert results.count("too large") == 10 and results.count("ok") == 30
    assert caught == []


def test_unreadable_file_with_image_open_patched_by_a_host_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics replaces Image.open with a wrapper that imports an optional HEIF plugin on
    unidentified files; in a process that imported it, a text file must still be an ImageError."""
    from PIL import Image

    original = Image.open

    def patched_open(*args: object, **kwargs: object) -> Image.Image:
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        except Image.UnidentifiedImageError:
            raise ModuleNotFoundError("No module named 'pi_heif'", name="pi_heif") from None

    monkeypatch.setattr(Image, "open", patched_open)
    with pytest.raises(UnsupportedImageError):
        load_image(b"hello, I am text")
