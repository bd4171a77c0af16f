"""Phone and camera effects for training, and pasted bags."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from training.augment import EFFECTS, PhotoNoise, _insert
from training.copy_paste import cut_out, paste_pile, polygons
from training.paths import SHARED_DATASETS

cv2 = pytest.importorskip("cv2")


def _street(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((96, 128, 3), 120, np.uint8)
    image[48:] = 80  # pavement
    image[20:40, 30:60] = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # something textured
    return image


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_effect_changes_the_pixels_and_keeps_the_frame(effect: str) -> None:
    image = _street()
    labels = {"img": image.copy(), "cls": np.array([[0]])}
    out = PhotoNoise(p=1.0, effects=(effect,))(labels)
    assert out["img"].shape == image.shape and out["img"].dtype == np.uint8
    assert np.abs(out["img"].astype(int) - image).mean() > 0.5
    assert out["cls"].tolist() == [[0]]


def test_low_light_and_night_darken() -> None:
    image = _street()
    for effect in ("low_light", "night"):
        out = PhotoNoise(p=1.0, effects=(effect,))({"img": image.copy()})["img"]
        assert out.mean() < 0.8 * image.mean()


def test_probability_zero_leaves_the_photo_alone() -> None:
    image = _street()
    assert np.array_equal(PhotoNoise(p=0.0)({"img": image.copy()})["img"], image)


def test_an_unknown_effect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown effects"):
        PhotoNoise(effects=("snow",))


class _Compose:
    def __init__(self, transforms: list[object]) -> None:
        self.transforms = transforms


def test_the_trainer_keeps_the_noise_when_it_rebuilds_its_pipeline() -> None:
    formatting = object()
    resets: list[bool] = []
    dataset = SimpleNamespace(transforms=_Compose(["mosaic", "hsv", formatting]))
    dataset.build_transforms = lambda hyp=None: _Compose(["letterbox", "hsv", formatting])
    trainer = SimpleNamespace(train_loader=SimpleNamespace(dataset=dataset, reset=lambda: resets.append(True)))
    noise = PhotoNoise(p=0.3)

    _insert(trainer, noise)
    assert dataset.transforms.transforms == ["mosaic", "hsv", noise, formatting] and resets == [True]
    rebuilt = dataset.build_transforms(None)  # what closing the mosaic does
    assert rebuilt.transforms == ["letterbox", "hsv", noise, formatting]


def test_polygons_skip_plain_boxes() -> None:
    text = "0 0.1 0.1 0.5 0.1 0.5 0.5\n1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.4 0.2 0.4 0.4 0.2 0.4"
    assert [len(p) for p in polygons(text)] == [3, 4]


def test_a_tiny_bag_is_not_cut_out() -> None:
    photo = Image.new("RGB", (200, 200), (40, 40, 40))
    assert cut_out(photo, [(0.1, 0.1), (0.15, 0.1), (0.15, 0.15)], "tiny.jpg") is None
    bag = cut_out(photo, [(0.1, 0.1), (0.6, 0.1), (0.6, 0.7), (0.1, 0.7)], "bag.jpg")
    assert bag is not None and bag.pixels.size == (100, 120) and bag.pixels.mode == "RGBA"


def test_a_pasted_pile_stands_beside_a_bin_inside_the_photo() -> None:
    bag = cut_out(Image.new("RGB", (100, 100), (230, 230, 230)), [(0, 0), (1, 0), (1, 1), (0, 1)], "white.jpg")
    assert bag is not None
    scene = Image.new("RGB", (640, 480), (90, 90, 90))
    bins = [[1, 0.5, 0.6, 0.1, 0.3]]  # a bin in the middle, 144 px high
    for seed in range(10):
        pasted, boxes = paste_pile(scene, bins, [bag], random.Random(seed))
        assert 1 <= len(boxes) <= 4
        pixels = np.asarray(pasted, dtype=float)
        for cx, cy, w, h in boxes:
            assert cx - w / 2 >= 0 and cx + w / 2 <= 1 and cy - h / 2 >= 0 and cy + h / 2 <= 1
            x0, y0 = int((cx - w / 2) * 640) + 2, int((cy - h / 2) * 480) + 2
            x1, y1 = int((cx + w / 2) * 640) - 2, int((cy + h / 2) * 480) - 2
            assert pixels[y0:y1, x0:x1].mean() > 120  # the (brightness-matched) bag is there


@pytest.mark.skipif(not (SHARED_DATASETS / "trash-bags-kr").is_dir(), reason="needs ../shared/datasets")
def test_pasted_scenes_come_with_their_labels(tmp_path) -> None:
    from training.copy_paste import write

    summary = write(tmp_path, scenes=3, seed=1)
    assert summary["scenes"] == 3 and summary["bags"] >= 3
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert len(labels) == 3 == len(list((tmp_path / "images" / "train").glob("*.jpg")))
    classes = {line.split()[0] for f in labels for line in f.read_text().splitlines()}
    assert classes == {"0", "2"}  # the pasted bags (dumped_waste) and the scenes' bins
