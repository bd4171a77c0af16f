"""Make phone-like test photos: 12 MP JPEGs of 3-5 MB with sensor-like noise, EXIF GPS and orientation.

The shared datasets hold 640x640 photos without EXIF; a field agent's phone sends 4032x3024 JPEGs
of a few megabytes, often rotated through the EXIF orientation tag. The model card's cost figures and
the benchmarks must decode what phones send, so this upscales real photos and adds noise that JPEG
cannot compress away. ``python -m training.phone_photos OUT_DIR --count 20`` writes a set by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from PIL import Image
from PIL.ExifTags import IFD

from training.paths import SHARED_DATASETS
from vipare.size import Size

__all__ = ["PHONE_SIZE", "SHARED_VAL", "make_phone_photos"]

PHONE_SIZE = Size(width=4032, height=3024)
"""A 12 MP phone photo held upright."""
SHARED_VAL = SHARED_DATASETS / "street-waste-cn" / "images" / "val"
"""The photos upscaled by default: the shared street-waste-cn validation split."""


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 4)
    return (float(degrees), float(minutes), seconds)


def _exif(lat: float, lon: float, orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "vipare-bench"  # Make
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = _dms(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = _dms(lon)
    gps[31] = 4.5  # GPSHPositioningError, metres
    return exif


def make_phone_photos(
    out_dir: Path,
    count: int,
    *,
    sources: Sequence[Path] | None = None,
    size: Size = PHONE_SIZE,
    noise_sigma: float = 6.0,
    quality: int = 92,
    seed: int = 0,
) -> list[Path]:
    """Write ``count`` phone-like JPEGs to ``out_dir`` (reused when already there).

    Every other photo is stored sideways with EXIF orientation 6 or 8, as phones held upright do.

    Args:
        out_dir: folder to write into.
        count: number of photos.
        sources: photos to upscale; defaults to the shared street-waste-cn validation photos.
        size: size of the upright photo.
        noise_sigma: standard deviation of the Gaussian sensor noise, in 8-bit levels.
        quality: JPEG quality.
        seed: noise and position seed.

    Returns:
        The written paths, in order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    srcs = list(sources) if sources is not None else sorted(SHARED_VAL.glob("*.jpg"))
    if not srcs:
        raise FileNotFoundError(f"no source photos found (looked in {SHARED_VAL})")
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        target = out_dir / f"phone-{i:03d}.jpg"
        paths.append(target)
        if target.exists():
            continue
        with Image.open(srcs[i % len(srcs)]) as src:
            upright = src.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(upright, dtype=np.float32)
        pixels += rng.normal(0.0, noise_sigma, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        orientation = (1, 6, 1, 8)[i % 4]
        # Store the pixels as the sensor saw them: orientation 6 means "rotate 90 CW to view".
        if orientation == 6:
            image = image.transpose(Image.Transpose.ROTATE_90)
        elif orientation == 8:
            image = image.transpose(Image.Transpose.ROTATE_270)
        lat = 49.1193 + rng.uniform(-0.02, 0.02)
        lon = 6.1757 + rng.uniform(-0.02, 0.02)
        tmp = target.with_suffix(".part")
        image.save(tmp, format="JPEG", quality=quality, exif=_exif(lat, lon, orientation))
        tmp.replace(target)
    return paths


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(1), default=20, show_default=True, help="Number of photos.")
def main(out_dir: Path, count: int) -> None:
    """Write COUNT phone-like 12 MP JPEGs to OUT_DIR and print their sizes."""
    for path in make_phone_photos(out_dir, count):
        click.echo(f"{path} {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
