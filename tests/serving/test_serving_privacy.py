"""Faces and plates blurred before a photo is stored: the stored, served and annotated copies.

The regions come from a stand-in for :class:`vipare.privacy.PrivacyDetector` (a fixed box), so the
tests say what the service does with regions, not what the shipped detectors find (that is
``test_privacy_set.py``, on real photos).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from serving.batch.frames import FrameRef, FrameTask, analyze_frame
from serving.photos.anonymise import anonymise, fine_plates_needed
from serving.photos.metadata import clean_metadata
from serving.photos.store import PhotoStore
from tests.imagegen import make_photo, pattern_array
from tests.onnxgen import MAGENTA
from tests.serving.helpers import CELL, DEPOSIT_CELL, PHOTO_SIZE, Server, server_at
from vipare.detection import Detector
from vipare.geotag import CameraPosition
from vipare.imaging import DecodedImage, load_image
from vipare.pipeline import Pipeline
from vipare.privacy import Region
from vipare.size import Size

FACE = (400.0, 40.0, 520.0, 160.0)
"""Where the stand-in finds a "face": a textured square away from the deposit."""


class FixedRegions:
    """A stand-in for the privacy detectors: the same regions in every photo."""

    def __init__(self, regions: Sequence[Region]) -> None:
        self.regions = list(regions)

    def find(self, image: np.ndarray, original_size: Size | None = None) -> list[Region]:
        return list(self.regions)

    def warm_up(self) -> None:
        """Nothing to warm: no model runs."""


def _photo(seed: int, lat: float, lon: float) -> bytes:
    """A 640 x 480 deposit photo (magenta square) with a checkerboard where :data:`FACE` is."""
    array = pattern_array(PHOTO_SIZE)
    column, row = DEPOSIT_CELL
    array[CELL * row : CELL * (row + 1), CELL * column : CELL * (column + 1)] = MAGENTA
    x1, y1, x2, y2 = (int(v) for v in FACE)
    ys, xs = np.indices((y2 - y1, x2 - x1))
    array[y1:y2, x1:x2] = ((((ys // 3) + (xs // 3)) % 2) * 255)[:, :, None]
    array[0, 0] = seed % 256
    return make_photo("JPEG", array=array, quality=92, lat=lat, lon=lon)


def _sharpness(data: bytes, box: tuple[float, float, float, float] = FACE) -> float:
    with Image.open(io.BytesIO(data)) as img:
        return _array_sharpness(np.asarray(img.convert("RGB")), box)


def _array_sharpness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(cv2.Laplacian(grey[y1:y2, x1:x2], cv2.CV_64F).var())


@pytest.fixture
def faces(server: Server) -> Iterator[None]:
    """The service's privacy detectors replaced by one finding :data:`FACE`."""
    pipeline = server.service.pipeline
    kept = pipeline.privacy
    pipeline.privacy = FixedRegions([Region("face", FACE, 0.9)])  # type: ignore[assignment]
    yield
    pipeline.privacy = kept


@pytest.mark.usefixtures("faces")
def test_a_face_is_unreadable_in_the_stored_served_and_annotated_photo(server: Server) -> None:
    photo = _photo(1, 48.8601, 2.3501)
    response = server.upload(photo)
    assert response.status_code == 201, response.text
    report = response.json()
    sha256 = hashlib.sha256(photo).hexdigest()
    stored = server.folder.path(sha256, "jpg").read_bytes()  # named after the uploaded bytes
    served = server.client.get(f"/v1/reports/{report['id']}/image", headers=server.headers("manager"))
    annotated = server.client.get(f"/v1/reports/{report['id']}/image/annotated", headers=server.headers("manager"))
    assert served.status_code == annotated.status_code == 200
    before = _sharpness(photo)
    for copy in (stored, served.content, annotated.content):
        assert _sharpness(copy) < 0.05 * before
    with Image.open(io.BytesIO(stored)) as img:
        assert not img.getexif() and "exif" not in img.info
    # the deposit is left as it was: found again in the stored copy
    result = server.service.pipeline.analyze(stored)
    assert [d.label for d in result.detections] == [d["label"] for d in report["detections"]]
    assert result.verdict.dumping


@pytest.mark.usefixtures("faces")
def test_the_same_photo_sent_again_is_recognised_and_stored_once(server: Server) -> None:
    photo = _photo(2, 48.8602, 2.3502)
    first = server.upload(photo)
    files = server.counts()[2]
    again = server.upload(photo)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert server.counts()[2] == files


def test_without_regions_the_store_keeps_the_upload_cleaned_of_its_metadata(server: Server) -> None:
    pipeline = server.service.pipeline
    kept, pipeline.privacy = pipeline.privacy, FixedRegions([])  # type: ignore[assignment]
    try:
        photo = _photo(3, 48.8603, 2.3503)
        assert server.upload(photo).status_code == 201
    finally:
        pipeline.privacy = kept
    stored = server.folder.path(hashlib.sha256(photo).hexdigest(), "jpg").read_bytes()
    assert stored == clean_metadata(photo)


def test_anonymising_is_deterministic_so_a_torn_file_is_stored_again(tmp_path: Path) -> None:
    photo = _photo(4, 48.8604, 2.3504)
    regions = [Region("plate", FACE, 0.8)]
    content = anonymise(photo, regions, max_pixels=10**8, max_non_jpeg_pixels=10**8)
    assert content == anonymise(photo, regions, max_pixels=10**8, max_non_jpeg_pixels=10**8)
    store = PhotoStore(tmp_path)
    sha256 = hashlib.sha256(photo).hexdigest()
    assert store.put(content, sha256, "jpg")
    store.path(sha256, "jpg").write_bytes(content[:100])  # a power cut left it torn
    assert store.put(anonymise(photo, regions, max_pixels=10**8, max_non_jpeg_pixels=10**8), sha256, "jpg")
    assert store.path(sha256, "jpg").read_bytes() == content


class _Verdicts:
    """A stand-in for the deposit pipeline: the verdicts given, in turn, for the images it is shown."""

    def __init__(self, answers: Sequence[bool]) -> None:
        self.answers = list(answers)
        self.seen: list[DecodedImage] = []

    def analyze(self, image: DecodedImage) -> SimpleNamespace:
        self.seen.append(image)
        return SimpleNamespace(verdict=SimpleNamespace(dumping=self.answers[len(self.seen) - 1]))


@pytest.mark.parametrize(
    ("answers", "fine"),
    [
        ([True], False),  # the coarse blur keeps the verdict: no second try
        ([False, True], True),  # a blurred car read as a bin: the plate bands' fine cells
        ([False, False], False),  # neither keeps it: the coarser, more private copy
    ],
)
def test_the_fine_plate_cells_are_taken_only_when_the_coarse_blur_changes_the_verdict(
    answers: list[bool], fine: bool
) -> None:
    photo = _photo(5, 48.8605, 2.3505)
    reduced = load_image(photo, target_size=Size(160, 160))  # decoded at half size, as the analysis does
    assert reduced.scale == (2.0, 2.0)
    pipeline = _Verdicts(answers)
    assert fine_plates_needed(pipeline, reduced, [Region("plate", FACE, 0.8)], True) is fine  # type: ignore[arg-type]
    assert len(pipeline.seen) == len(answers)
    half = (FACE[0] / 2, FACE[1] / 2, FACE[2] / 2, FACE[3] / 2)
    for seen in pipeline.seen:  # each try blurred the band where it lies in the reduced copy, nothing else
        assert seen.info == reduced.info and seen.array.shape == reduced.array.shape
        assert _array_sharpness(seen.array, half) < 0.05 * _array_sharpness(reduced.array, half)
        outside = np.ones(reduced.array.shape[:2], bool)
        x1, y1, x2, y2 = (int(v) for v in half)
        outside[y1 - 1 : y2 + 1, x1 - 1 : x2 + 1] = False
        assert np.array_equal(seen.array[outside], reduced.array[outside])
    if len(answers) == 2:
        assert not np.array_equal(pipeline.seen[0].array, pipeline.seen[1].array)  # the second try is another blur


def test_without_a_plate_band_the_verdict_check_is_not_run() -> None:
    photo = _photo(6, 48.8606, 2.3506)
    pipeline = _Verdicts([])
    image = load_image(photo, target_size=Size(160, 160))
    assert not fine_plates_needed(pipeline, image, [Region("face", FACE, 0.9)], True)  # type: ignore[arg-type]
    assert pipeline.seen == []


def test_fine_plate_cells_are_another_blur_that_leaves_nothing_readable() -> None:
    photo = _photo(7, 48.8607, 2.3507)
    regions = [Region("plate", FACE, 0.8)]
    coarse = anonymise(photo, regions, max_pixels=10**8, max_non_jpeg_pixels=10**8)
    fine = anonymise(photo, regions, max_pixels=10**8, max_non_jpeg_pixels=10**8, fine_plates=True)
    assert fine != coarse
    for content in (coarse, fine):
        assert _sharpness(content) < 0.05 * _sharpness(photo)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_other_formats_stay_in_their_format(fmt: str) -> None:
    array = pattern_array(PHOTO_SIZE)
    x1, y1, x2, y2 = (int(v) for v in FACE)
    array[y1:y2, x1:x2] = (np.indices((y2 - y1, x2 - x1)).sum(axis=0) % 2 * 255)[:, :, None]
    photo = make_photo(fmt, array=array, lat=48.86, lon=2.35)
    content = anonymise(photo, [Region("face", FACE, 0.9)], max_pixels=10**8, max_non_jpeg_pixels=10**8)
    with Image.open(io.BytesIO(content)) as img:
        assert img.format == fmt and not img.getexif()
    assert _sharpness(content) < 0.05 * _sharpness(photo)


def test_a_camera_frame_is_blurred_by_the_batch_worker(tmp_path: Path, detector: Detector) -> None:
    from serving.config import ServiceSettings

    photo = _photo(5, 48.8605, 2.3505)
    frame = tmp_path / "frame.jpg"
    frame.write_bytes(photo)
    pipeline = Pipeline(
        detector=detector,
        settings=ServiceSettings(intra_op_threads=1),
        privacy=FixedRegions([Region("face", FACE, 0.9)]),  # type: ignore[arg-type]
    )
    sha256 = hashlib.sha256(photo).hexdigest()
    camera = CameraPosition(camera_id="cam1", lat=48.86, lon=2.35, accuracy_m=5)
    task = FrameTask(0, "frame.jpg", FrameRef(str(frame)), sha256, camera, None)
    store = PhotoStore(tmp_path / "photos")
    outcome = analyze_frame(pipeline, task, store)
    assert outcome.photo_stored and outcome.private_regions
    assert _sharpness(store.path(sha256, "jpg").read_bytes()) < 0.05 * _sharpness(photo)


def test_the_blurring_keeps_a_raised_non_jpeg_limit(tmp_path: Path, detector: Detector) -> None:
    from serving.config import ServiceSettings

    # 12.8 MP: over the default WebP limit (12.5 MP, a quarter of 50), under the raised one (15 MP)
    array = np.zeros((3200, 4000, 3), np.uint8)
    array[::7] = 200
    out = io.BytesIO()
    Image.fromarray(array).save(out, "WEBP", quality=50, method=0)
    photo = out.getvalue()
    frame = tmp_path / "frame.webp"
    frame.write_bytes(photo)
    pipeline = Pipeline(
        detector=detector,
        settings=ServiceSettings(intra_op_threads=1, max_non_jpeg_pixels=60_000_000),
        privacy=FixedRegions([Region("face", FACE, 0.9)]),  # type: ignore[arg-type]
    )
    sha256 = hashlib.sha256(photo).hexdigest()
    camera = CameraPosition(camera_id="cam1", lat=48.86, lon=2.35, accuracy_m=5)
    task = FrameTask(0, "frame.webp", FrameRef(str(frame)), sha256, camera, None)
    outcome = analyze_frame(pipeline, task, PhotoStore(tmp_path / "photos"))
    assert outcome.error is None and outcome.photo_stored


def test_blurring_can_be_turned_off(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path, detector, blur_photos=False) as plain:
        assert plain.service.pipeline.privacy is None
        photo = _photo(6, 48.8606, 2.3506)
        assert plain.upload(photo).status_code == 201
        stored = plain.folder.path(hashlib.sha256(photo).hexdigest(), "jpg").read_bytes()
        assert stored == clean_metadata(photo)


# How a picture is stored to show upright under each EXIF orientation (the inverse of exif_transpose).
_STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_is_blurred_where_its_upright_regions_are_and_keeps_its_orientation(orientation: int) -> None:
    """Blurred as stored (never turned), with the orientation tag a viewer applies and no other one."""
    from vipare.blur import blur_regions
    from vipare.imaging import load_image

    upright = pattern_array((160, 120))
    upright[20:60, 30:80] = (np.indices((40, 50)).sum(axis=0) % 2 * 255)[:, :, None]  # a checkerboard in the box
    method = _STORED_AS.get(orientation)
    stored = upright if method is None else np.asarray(Image.fromarray(upright).transpose(method))
    photo = make_photo("JPEG", array=stored, orientation=orientation, quality=95)
    box = (30.0, 20.0, 80.0, 60.0)
    content = anonymise(photo, [Region("face", box, 0.9)], max_pixels=10**8, max_non_jpeg_pixels=10**8)
    seen = load_image(photo).array  # turned upright by its tag, as any viewer does
    expected = blur_regions(seen, [box])
    with Image.open(io.BytesIO(content)) as img:
        assert dict(img.getexif()) == ({} if orientation == 1 else {0x0112: orientation})
        assert img.size == (stored.shape[1], stored.shape[0])  # as it was stored: not turned
    got = load_image(content).array
    assert got.shape == expected.shape == (120, 160, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4
    inside = (slice(20, 60), slice(30, 80))
    assert np.abs(got[inside].astype(int) - expected[inside]).mean() < 4  # blurred where the box is upright
    assert np.abs(got[inside].astype(int) - seen[inside]).mean() > 60  # where the checkerboard was


def test_an_rgb_colour_profile_is_kept() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.fromarray(pattern_array(PHOTO_SIZE)).save(out, "JPEG", icc_profile=icc)
    content = anonymise(out.getvalue(), [Region("face", FACE, 0.9)], max_pixels=10**8, max_non_jpeg_pixels=10**8)
    with Image.open(io.BytesIO(content)) as img:
        assert img.info.get("icc_profile") == icc


def test_a_dataset_export_holds_the_blurred_photo(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path, detector) as fresh:
        fresh.service.pipeline.privacy = FixedRegions([Region("face", FACE, 0.9)])  # type: ignore[assignment]
        photo = _photo(7, 48.8607, 2.3507)
        assert fresh.upload(photo).status_code == 201
        response = fresh.client.post(
            "/v1/datasets/export", params={"include_unreviewed": "true"}, headers=fresh.headers("manager")
        )
        assert response.status_code == 200, response.text
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            images = [name for name in archive.namelist() if name.endswith(".jpg")]
            assert len(images) == 1
            exported = archive.read(images[0])
    assert _sharpness(exported) < 0.05 * _sharpness(photo)


def test_a_deposit_the_agent_reports_stays_visible_when_the_model_doubts_it(tmp_path: Path, detector: Detector) -> None:
    """Blurring spares the deposits that count towards the verdict; with a bar the stand-in's find does not
    reach, a head over the deposit hides it, unless the agent said the photo shows a deposit."""
    column, row = DEPOSIT_CELL
    x1, y1, x2, y2 = CELL * column, CELL * row, CELL * (column + 1), CELL * (row + 1)
    head = Region("head", (x1 - 60.0, y1 - 60.0, x2 + 60.0, y2 + 60.0), 0.9)
    centre = (slice(y1 + 30, y2 - 30), slice(x1 + 30, x2 - 30))
    magenta = np.array(MAGENTA, dtype=float)
    with server_at(tmp_path, detector, verdict_threshold=0.999) as server:
        server.service.pipeline.privacy = FixedRegions([head])  # type: ignore[assignment]
        off_magenta = {}
        for seed, says in ((21, True), (22, False)):
            photo = _photo(seed, 48.8601 + seed * 0.001, 2.3501)
            response = server.upload(photo, agent_says_deposit="true" if says else None)
            assert response.status_code in (200, 201), response.text
            assert not response.json()["verdict"]["dumping"]  # the model alone does not count it
            stored = server.folder.path(hashlib.sha256(photo).hexdigest(), "jpg").read_bytes()
            with Image.open(io.BytesIO(stored)) as img:
                patch = np.asarray(img.convert("RGB"), dtype=float)[centre]
            off_magenta[says] = float(np.abs(patch - magenta).mean())
    assert off_magenta[True] < 10 < off_magenta[False], off_magenta
