"""The face search of the privacy step, as it was (OpenCV) and as it is (onnxruntime), side by side.

Both run the shipped YuNet (``VIPARE_FACE_MODEL_PATH``) at the face threshold of the settings, on
one thread (``set_thread_budget(1)`` for OpenCV, ``intra_op_threads=1`` for onnxruntime):

* OpenCV: ``cv2.FaceDetectorYN`` as ``vipare.privacy`` ran it before ``vipare.faces``: one detector,
  its input size set to the photo's, the photo turned BGR and detected;
* onnxruntime: ``vipare.faces.FaceDetector.detect`` (pad, blob, ``session.run``, decode, NMS).

The photos: the privacy set's (``tests/data/privacy_boxes.json``, 63 street photos of ../shared with
faces, 640 x 640 as decoded) and the first ``--val`` photos of street-waste-cn val, each at its
decoded size and again resized to 1008 x 756 (the reduced copy of a 4:3 phone photo). For each size
it prints the median CPU time per photo of each (``time.process_time``, the two interleaved photo by
photo so that both see the same background load, ``--rounds`` passes), and whether they found the
same faces: how many, and the largest difference in box corners, the lowest IoU and the largest
difference in score between a face and its counterpart (in OpenCV's order).

    python -m benchmarks.bench_faces --val 20 --rounds 3
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np
from numpy.typing import NDArray

from benchmarks.cli import command
from serving.batch.frames import set_thread_budget
from vipare import Settings
from vipare.faces import FaceDetector, Faces
from vipare.imaging import load_image
from vipare.machine import machine
from vipare.privacy import box_iou
from vipare.size import Size

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
BOXES = ROOT / "tests" / "data" / "privacy_boxes.json"
VAL = DATASETS / "street-waste-cn" / "images" / "val"
PHONE = Size(1008, 756)


class _OpenCV:
    """The face search of vipare.privacy before vipare.faces: ``cv2.FaceDetectorYN``, resized per photo."""

    def __init__(self, model: Path, threshold: float) -> None:
        self.detector = cv2.FaceDetectorYN.create(str(model), "", (640, 640), threshold)

    def detect(self, image: NDArray[np.uint8]) -> Faces:
        self.detector.setInputSize(Size.of(image))
        _, rows = self.detector.detect(np.ascontiguousarray(image[:, :, ::-1]))
        if rows is None:
            return Faces(np.empty((0, 4), np.float32), np.empty(0, np.float32))
        boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
        return Faces(boxes.astype(np.float32), rows[:, -1].astype(np.float32))


def _cpu_ms(detect: Callable[[NDArray[np.uint8]], Faces], image: NDArray[np.uint8]) -> tuple[float, Faces]:
    start = time.process_time()
    faces = detect(image)
    return (time.process_time() - start) * 1000.0, faces


def _compare(old: Faces, new: Faces, diff: dict[str, float]) -> bool:
    """Whether both found as many faces; updates the worst corner, IoU and score differences."""
    if len(old) != len(new):
        return False
    for a, b, sa, sb in zip(old.boxes.tolist(), new.boxes.tolist(), old.scores, new.scores, strict=True):
        diff["corner"] = max(diff["corner"], max(abs(u - v) for u, v in zip(a, b, strict=True)))
        diff["iou"] = min(diff["iou"], box_iou(a, b))
        diff["score"] = max(diff["score"], abs(float(sa) - float(sb)))
    return True


@command(__doc__)
@click.option("--val", "count", type=click.IntRange(0), default=20, show_default=True,
              help="street-waste-cn val photos added to the privacy set's.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Interleaved passes.")
def main(count: int, rounds: int) -> None:
    settings = Settings()
    set_thread_budget(1)
    paths = [DATASETS / case["photo"] for case in json.loads(BOXES.read_text())["photos"]]
    paths += sorted(VAL.glob("*.jpg"))[:count]
    photos = [load_image(path).array for path in paths]
    old = _OpenCV(settings.face_model_path, settings.face_threshold)
    new = FaceDetector(settings.face_model_path, score_threshold=settings.face_threshold, intra_op_threads=1)
    print(f"machine: {machine()}; OpenCV {cv2.__version__}, one thread each")
    print(f"model: {settings.face_model_path.name}, threshold {settings.face_threshold}; {len(photos)} photos "
          f"({len(paths) - count} of the privacy set, {count} of street-waste-cn val), {rounds} rounds")
    for label, resize in (("as decoded", None), (f"at {PHONE.width} x {PHONE.height}", PHONE)):
        images = [photo if resize is None else np.asarray(cv2.resize(photo, resize), np.uint8) for photo in photos]
        for image in images[:2]:  # warm both up
            old.detect(image)
            new.detect(image)
        times: dict[str, list[float]] = {"opencv": [], "onnxruntime": []}
        diff = {"corner": 0.0, "iou": 1.0, "score": 0.0}
        same = faces = 0
        for _ in range(rounds):
            for image in images:
                ms_old, found_old = _cpu_ms(old.detect, image)
                ms_new, found_new = _cpu_ms(new.detect, image)
                times["opencv"].append(ms_old)
                times["onnxruntime"].append(ms_new)
                same += _compare(found_old, found_new, diff)
                faces += len(found_old)
        sizes = sorted({f"{image.shape[1]} x {image.shape[0]}" for image in images})
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"{label} ({', '.join(sizes)}):")
        print(f"  CPU ms per photo, median   opencv {med['opencv']:6.1f}   onnxruntime {med['onnxruntime']:6.1f}   "
              f"ratio {med['opencv'] / med['onnxruntime']:.2f}x")
        print(f"  same number of faces on {same // rounds} of {len(images)} photos "
              f"({faces // rounds} faces by OpenCV); worst: corner {diff['corner']:.4f} px, "
              f"IoU {diff['iou']:.5f}, score {diff['score']:.2e}")


if __name__ == "__main__":
    main()
