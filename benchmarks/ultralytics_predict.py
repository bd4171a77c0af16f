"""Ultralytics' side of ``bench_batch``: ``predict`` over a folder of frames, and nothing else.

Run as its own command, so that its whole time holds what a user of Ultralytics pays (the Python
start, ``import ultralytics``, ``YOLO()``) and no more: it imports nothing of vipare (reading its
options with click costs about 20 ms, which ``vipare batch`` pays too). FRAMES is a folder of frames
(``*.jpg``, searched recursively), MODEL the ONNX model. Prints on stderr the seconds from the first
``predict`` call to its last result (model loading included).

    python -m benchmarks.ultralytics_predict FRAMES MODEL --imgsz 320 320 --conf 0.25 --iou 0.45 --max-det 100
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from benchmarks.cli import command


@command(__doc__)
@click.argument("frames", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--imgsz", type=int, nargs=2, required=True, metavar="HEIGHT WIDTH", help="Model input size, pixels.")
@click.option("--conf", type=float, required=True, help="Minimum detection score.")
@click.option("--iou", type=float, required=True, help="IoU above which NMS drops the lower-scored box.")
@click.option("--max-det", type=int, required=True, help="Most detections per frame.")
def main(frames: Path, model: Path, imgsz: tuple[int, int], conf: float, iou: float, max_det: int) -> None:
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    start, count = time.perf_counter(), 0
    for _ in yolo.predict(
        str(frames / "**" / "*.jpg"), stream=True, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, verbose=False,
    ):
        count += 1
    print(f"predict {time.perf_counter() - start:.3f} s, {count} results", file=sys.stderr)


if __name__ == "__main__":
    main()
