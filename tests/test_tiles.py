"""The tiled second look at a photo in which the whole-image pass found no deposit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.onnxgen import MAGENTA, make_colour_detector_onnx, small_deposit_photo
from vipare import Pipeline, Settings
from vipare.size import Size
from vipare.tiles import tile_windows


def test_tiles_cover_the_photo_and_overlap() -> None:
    windows = tile_windows(Size(1008, 756))
    assert len(windows) == 4
    assert min(w[0] for w in windows) == 0 and max(w[2] for w in windows) == 1008
    assert min(w[1] for w in windows) == 0 and max(w[3] for w in windows) == 756
    (ax0, _, ax1, _), (bx0, _, _, _) = windows[0], windows[1]
    assert bx0 < ax1 and (ax1 - bx0) == pytest.approx(0.25 * (ax1 - ax0), abs=1)
    assert tile_windows(Size(100, 50), grid=1) == [(0, 0, 100, 50)]


@pytest.mark.parametrize(("grid", "overlap"), [(0, 0.2), (2, 1.0), (2, -0.1)])
def test_impossible_tilings_are_refused(grid: int, overlap: float) -> None:
    with pytest.raises(ValueError, match="grid"):
        tile_windows(Size(100, 100), grid=grid, overlap=overlap)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_detector_onnx(tmp_path_factory.mktemp("tiles") / "colour.onnx")


def _pipeline(model: Path, tiles: bool) -> Pipeline:
    return Pipeline(settings=Settings(model_path=model, tiles_when_empty=tiles, blur_photos=False,
                                      intra_op_threads=1))


def test_a_small_deposit_missed_whole_is_found_in_a_tile(colour_model: Path) -> None:
    photo = small_deposit_photo()
    assert not _pipeline(colour_model, tiles=False).analyze(photo).verdict.dumping
    result = _pipeline(colour_model, tiles=True).analyze(photo)
    assert result.verdict.dumping
    (found,) = [d for d in result.detections if d.deposit]
    # The first tile's cell (1, 1): 91.4..182.9 px of the photo, inside the magenta square.
    np.testing.assert_allclose(found.box, (91.4, 91.4, 182.9, 182.9), atol=1.0)
    assert found.area_fraction == pytest.approx(91.4**2 / 1280**2, rel=0.03)


def test_a_photo_found_whole_is_not_tiled(colour_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = Image.new("RGB", (640, 480), (128, 128, 128))
    photo.paste(MAGENTA, (160, 160, 240, 240))  # one whole cell of the first pass
    data = io.BytesIO()
    photo.save(data, "PNG")
    pipeline = _pipeline(colour_model, tiles=True)
    import vipare.pipeline

    calls: list[int] = []
    monkeypatch.setattr(vipare.pipeline, "detect_in_tiles", lambda *a, **k: calls.append(1) or [])
    assert pipeline.analyze(data.getvalue()).verdict.dumping and calls == []


def test_a_photo_smaller_than_the_model_input_is_not_tiled(colour_model: Path) -> None:
    pipeline = _pipeline(colour_model, tiles=True)
    small = pipeline.decode(_tiny_png())
    assert not pipeline.looks_again(small)


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 150), (128, 128, 128)).save(out, "PNG")
    return out.getvalue()


def test_a_tile_find_under_its_tile_threshold_is_dropped(colour_model: Path) -> None:
    # The key colour scores 0.9: over 0.6 + 0.25 in a tile, under 0.7 + 0.25.
    for fixed, found in ((0.6, True), (0.7, False)):
        settings = Settings(model_path=colour_model, verdict_threshold=fixed, blur_photos=False, intra_op_threads=1,
                            tiles_when_empty=True)
        result = Pipeline(settings=settings).analyze(small_deposit_photo())
        assert result.verdict.dumping is found and any(d.deposit for d in result.detections) is found


def test_photos_may_get_the_second_look_while_camera_frames_do_not(colour_model: Path) -> None:
    photo = small_deposit_photo()
    assert not Settings().tiles_when_empty and not Settings().frame_tiles_when_empty  # both off by default
    pipeline = _pipeline(colour_model, tiles=True)
    assert pipeline.analyze(photo).verdict.dumping
    frames = pipeline.for_frames()
    assert frames.detector is pipeline.detector and frames.privacy is pipeline.privacy
    assert not frames.analyze(photo).verdict.dumping


def test_frames_may_have_the_second_look_too(colour_model: Path) -> None:
    settings = Settings(model_path=colour_model, blur_photos=False, intra_op_threads=1, frame_tiles_when_empty=True)
    pipeline = Pipeline(settings=settings)
    assert not pipeline.analyze(small_deposit_photo()).verdict.dumping
    assert pipeline.for_frames().analyze(small_deposit_photo()).verdict.dumping
    both = Pipeline(pipeline.detector, settings.model_copy(update={"tiles_when_empty": True}))
    assert both.for_frames() is both
