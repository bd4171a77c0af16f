"""Bags cut out along their labelled polygons and pasted onto other street scenes.

The model learns bags on pavements from a few dozen phone photos of one Korean street; pasted onto
the street-waste-cn scenes that show only ordinary bins (and so teach "a bin is not dumping"), the
same bags appear beside containers, at other sizes and lights, which is what a city's first reports
look like: a few bags left next to a container. Each pasted bag gets its own ``dumped_waste`` box,
the trash-bags-kr convention; the scene's own boxes are kept.

    python -m training.copy_paste runs/data/paste --scenes 400
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageFilter

from training.datasets import SOURCES
from training.images import image_files
from training.sessions import split_parts
from vipare.taxonomy import class_names

log = logging.getLogger(__name__)

MIN_CUTOUT_PX = 24
BIN_CLASS = "garbage_bin"
EDGE_FEATHER_PX = 1.5
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Cutout:
    """One bag: RGBA pixels cropped to its polygon's box, and where it came from."""

    pixels: Image.Image
    source: str


def polygons(label_text: str) -> list[list[tuple[float, float]]]:
    """Normalised polygons of a YOLO segmentation label file (boxes of 4 numbers are skipped)."""
    out = []
    for line in label_text.splitlines():
        values = [float(v) for v in line.split()[1:]]
        if len(values) >= 6 and len(values) % 2 == 0:
            out.append(list(zip(values[0::2], values[1::2], strict=True)))
    return out


def cut_out(image: Image.Image, polygon: list[tuple[float, float]], source: str) -> Cutout | None:
    """The polygon's pixels with a feathered alpha, or None when it is under MIN_CUTOUT_PX."""
    from PIL import ImageDraw

    w, h = image.size
    points = [(x * w, y * h) for x, y in polygon]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box = (int(min(xs)), int(min(ys)), int(np.ceil(max(xs))), int(np.ceil(max(ys))))
    if box[2] - box[0] < MIN_CUTOUT_PX or box[3] - box[1] < MIN_CUTOUT_PX:
        return None
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(EDGE_FEATHER_PX))
    rgba = image.convert("RGB").copy()
    rgba.putalpha(mask)
    return Cutout(rgba.crop(box), source)


def bag_cutouts(part: str = "fit") -> list[Cutout]:
    """Every trash-bags-kr bag of one session part (``fit`` for training, never ``holdout``)."""
    root = SOURCES["trash-bags-kr"].root
    images = [p for split in ("train", "val") for p in image_files(root / "images" / split)]
    keep = set(split_parts([p.name for p in images]).part(part))
    out: list[Cutout] = []
    for path in images:
        if path.name not in keep:
            continue
        label = root / "labels" / path.parent.name / f"{path.stem}.txt"
        with Image.open(path) as image:
            for polygon in polygons(label.read_text() if label.exists() else ""):
                cutout = cut_out(image, polygon, path.name)
                if cutout is not None:
                    out.append(cutout)
    return out


def bin_scenes() -> list[tuple[Path, list[list[float]]]]:
    """street-waste-cn training photos (the ``fit`` part: never a calibration photo) whose only labels
    are ordinary bins, with those boxes."""
    source = SOURCES["street-waste-cn"]
    bin_index = next(i for i, n in source.source_names().items() if n == BIN_CLASS)
    photos = image_files(source.root / "images" / "train")
    fit = set(split_parts([p.name for p in photos]).fit)
    out = []
    for path in (p for p in photos if p.name in fit):
        label = source.root / "labels" / "train" / f"{path.stem}.txt"
        rows = [[float(v) for v in line.split()] for line in (label.read_text() if label.exists() else "").splitlines()]
        rows = [r for r in rows if len(r) == 5]
        if rows and all(int(r[0]) == bin_index for r in rows):
            out.append((path, rows))
    return out


def _place(rng: random.Random, size: tuple[int, int], bins: list[list[float]], height: int) -> tuple[int, int, int]:
    """Where a pile starts (x, bottom) and the way it grows (+1 right, -1 left): from a bin's side
    outwards when there is a bin, else anywhere on the lower part of the photo."""
    w, h = size
    side = rng.choice((-1, 1))
    if bins:
        _, cx, cy, bw, bh = rng.choice(bins)
        bottom = (cy + bh / 2) * h
        x = (cx + side * bw / 2) * w + (0 if side > 0 else -height)
        return int(x), int(min(h, bottom + rng.uniform(-0.05, 0.05) * bh * h)), side
    return int(rng.uniform(0, w - height)), int(rng.uniform(0.6, 1.0) * h), side


def paste_pile(
    scene: Image.Image, bins: list[list[float]], cutouts: list[Cutout], rng: random.Random
) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """1-4 bags pasted side by side as one pile; the scene and each bag's normalised (cx, cy, w, h)."""
    w, h = scene.size
    out = scene.convert("RGB").copy()
    bin_h = max(((b[4] * h) for b in bins), default=0.25 * h)
    height = int(max(MIN_CUTOUT_PX / 2, rng.uniform(0.25, 0.6) * bin_h))
    x, bottom, grow = _place(rng, (w, h), bins, height)
    boxes = []
    for _ in range(rng.randint(1, 4)):
        cutout = rng.choice(cutouts).pixels
        scale = height * rng.uniform(0.7, 1.1) / cutout.height
        bag = cutout.resize((max(2, int(cutout.width * scale)), max(2, int(cutout.height * scale))), Image.BILINEAR)
        if rng.random() < 0.5:
            bag = bag.transpose(Image.FLIP_LEFT_RIGHT)
        # Dim or brighten the bag towards the scene's light.
        light = np.asarray(out.convert("L")).mean() / max(1.0, np.asarray(bag.convert("L")).mean())
        gain = float(np.clip(light, 0.6, 1.4))
        rgb = Image.fromarray(np.clip(np.asarray(bag.convert("RGB"), np.float32) * gain, 0, 255).astype(np.uint8))
        top = bottom - bag.height - int(rng.uniform(0, 0.3) * bag.height)
        x0, y0 = int(np.clip(x, 0, w - bag.width)), int(np.clip(top, 0, h - bag.height))
        out.paste(rgb, (x0, y0), bag.getchannel("A"))
        boxes.append(((x0 + bag.width / 2) / w, (y0 + bag.height / 2) / h, bag.width / w, bag.height / h))
        x += int(bag.width * rng.uniform(0.6, 0.95)) * grow
    return out, boxes


def write(out: Path, scenes: int, seed: int = 0) -> dict[str, int]:
    """Write ``scenes`` pasted photos as a YOLO dataset in the taxonomy (split ``train``) at ``out``."""
    rng = random.Random(seed)
    cutouts = bag_cutouts("fit")
    candidates = bin_scenes()
    chosen = rng.sample(candidates, min(scenes, len(candidates)))
    names = class_names()
    waste, bin_class = names.index("dumped_waste"), names.index("bin")
    (out / "images" / "train").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
    bags = 0
    for path, bins in chosen:
        with Image.open(path) as scene:
            pasted, boxes = paste_pile(scene, bins, cutouts, rng)
        stem = f"paste_{path.stem}"
        pasted.save(out / "images" / "train" / f"{stem}.jpg", quality=JPEG_QUALITY)
        lines = [f"{bin_class} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}" for b in bins]
        lines += [f"{waste} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}" for cx, cy, bw, bh in boxes]
        (out / "labels" / "train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        bags += len(boxes)
    (out / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n"
                                   + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    summary = {"scenes": len(chosen), "bags": bags, "cutouts": len(cutouts), "seed": seed}
    (out / "paste.json").write_text(json.dumps(summary, indent=2))
    return summary


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scenes", type=click.IntRange(1), default=400, show_default=True,
              help="Photos of ordinary bins to paste a pile onto.")
@click.option("--seed", type=int, default=0, show_default=True)
def main(out: Path, scenes: int, seed: int) -> None:
    """Paste trash-bags-kr bags (fit sessions only) onto street-waste-cn bin scenes at OUT."""
    logging.basicConfig(level=logging.INFO)
    click.echo(json.dumps(write(out, scenes, seed), indent=2))


if __name__ == "__main__":
    main()
