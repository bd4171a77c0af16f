"""Time and peak memory of taking in one large picture, per format, each in a fresh process.

For each picture it runs ``load_image`` (the upload's decode, at the size the model needs) in a child
process and reports the wall time and how much the process's peak resident memory grew over the
imports (``ru_maxrss``), under the default limits and with the PNG/WebP/HEIC limit lifted to the
general one (how the service behaved before ``max_non_jpeg_pixels``):

* the probe's PNG: 10000 x 10000 pixels, 285 KB (mostly one colour, so it compresses well);
* a 48 MP PNG and WebP (8000 x 6000; the PNG is under the default 50 MP limit, the WebP over its 12.5 MP): decoded
  whole, then reduced before any copy;
* a 108 MP JPEG (12000 x 9000): decoded at 1/8 by libjpeg.

Linux only (it reads the peak from ``/proc/self/status``).

    python -m benchmarks.bench_intake_memory
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
from PIL import Image

from benchmarks.cli import command
from vipare import Settings

# VmHWM, the peak resident memory of this process's own address space: ru_maxrss would carry over the
# parent's peak across fork and exec.
_CHILD = """
import re, sys, time
from vipare.errors import ImageTooLargeError
from vipare.imaging import load_image
from vipare.size import Size
def peak_kib():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+)", status.read())[1])
before = peak_kib()
start = time.perf_counter()
try:
    image = load_image(sys.argv[1], target_size=Size(640, 640), max_non_jpeg_pixels=int(sys.argv[2]))
    outcome = "decoded %dx%d" % (image.array.shape[1], image.array.shape[0])
except ImageTooLargeError:
    outcome = "refused (413)"
seconds = time.perf_counter() - start
grown = (peak_kib() - before) / 1024
print("%.2f %.0f %s" % (seconds, grown, outcome))
"""


def _pictures(folder: Path) -> dict[str, Path]:
    pictures: dict[str, Path] = {}
    flat = Image.new("RGB", (10000, 10000), (90, 90, 90))
    flat.paste((200, 40, 40), (4000, 4000, 6000, 6000))
    pictures["PNG 10000x10000 (flat)"] = folder / "flat.png"
    flat.save(pictures["PNG 10000x10000 (flat)"], compress_level=9)
    del flat
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 800, dtype=np.float64)[np.newaxis, :, np.newaxis]
    tile = np.clip(ramp + rng.normal(0, 12, (600, 800, 3)), 0, 255).astype(np.uint8)  # a textured ramp
    textured = Image.fromarray(np.tile(tile, (10, 10, 1)))  # 8000 x 6000
    for fmt, name in (("PNG", "48mp.png"), ("WEBP", "48mp.webp")):
        pictures[f"{fmt} 8000x6000"] = folder / name
        textured.save(folder / name, fmt, **({"quality": 80} if fmt == "WEBP" else {"compress_level": 1}))
    del textured
    big = Image.fromarray(np.tile(tile, (15, 15, 1)))  # 12000 x 9000
    pictures["JPEG 12000x9000"] = folder / "108mp.jpg"
    big.save(pictures["JPEG 12000x9000"], "JPEG", quality=85)
    return pictures


@command(__doc__)
def main() -> None:
    settings = Settings()
    limits = {"default limits": settings.max_non_jpeg_pixels, "non-JPEG limit lifted": settings.max_image_pixels}
    with tempfile.TemporaryDirectory() as tmp:
        pictures = _pictures(Path(tmp))
        click.echo(f"{'picture':<26}{'file':>9}  {'limits':<24}{'seconds':>8}{'peak MB':>9}  outcome")
        for name, path in pictures.items():
            for label, limit in limits.items():
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(path), str(limit)], capture_output=True, text=True, check=True
                )
                seconds, grown, outcome = done.stdout.split(maxsplit=2)
                size = f"{path.stat().st_size / 1e6:.2f} MB"
                click.echo(f"{name:<26}{size:>9}  {label:<24}{seconds:>8}{grown:>9}  {outcome.strip()}")


if __name__ == "__main__":
    main()
