"""Ultralytics' side of ``bench_batch``: ``predict`` over a folder of frames, and nothing else.

Run as its own command, so that its whole time holds what a user of Ultralytics pays (the Python
start, ``import ultralytics``, ``YOLO()``) and no more: it imports nothing of vipare. Prints on
stderr the seconds from the first ``predict`` call to its last result (model loading included).

    python -m benchmarks.ultralytics_predict FRAMES MODEL --imgsz 320 320 --conf 0.25 --iou 0.45 --max-det 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frames", type=Path, help="folder of frames (*.jpg, searched recursively)")
    parser.add_argument("model", type=Path, help="the ONNX model")
    parser.add_argument("--imgsz", type=int, nargs=2, required=True, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--conf", type=float, required=True)
    parser.add_argument("--iou", type=float, required=True)
    parser.add_argument("--max-det", type=int, required=True)
    args = parser.parse_args()

    from ultralytics import YOLO

    yolo = YOLO(str(args.model), task="detect")
    start, count = time.perf_counter(), 0
    for _ in yolo.predict(
        str(args.frames / "**" / "*.jpg"), stream=True, imgsz=tuple(args.imgsz), conf=args.conf, iou=args.iou,
        max_det=args.max_det, verbose=False,
    ):
        count += 1
    print(f"predict {time.perf_counter() - start:.3f} s, {count} results", file=sys.stderr)


if __name__ == "__main__":
    main()
