"""Per-photo cost of vipare's detection path, measured side by side in one run.

For each phone-like 12 MP JPEG (see ``phone_photos.py``) and in interleaved rounds, it times:

* decode: ``load_image`` at the size the model needs (JPEG draft + EXIF orientation + GPS);
* session.run: onnxruntime's bare ``session.run`` on an already prepared input;
* vipare end to end: ``Pipeline.analyze(path)`` (decode, letterbox, run, decode+NMS, verdict, location);
* Ultralytics: ``YOLO(<same onnx>).predict(path)`` with the same thresholds and input size.

and prints medians and the two ratios the project holds itself to:
end-to-end / (decode + session.run) <= 1.15 and Ultralytics / vipare >= 2.

    python -m benchmarks.bench_detect --photos 20 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from training.phone_photos import make_phone_photos
from vipare import Pipeline, Settings
from vipare.machine import machine


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Settings().model_path)
    parser.add_argument("--photos", type=int, default=20, help="number of 12 MP photos")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes over the photos")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument("--photo-dir", type=Path, default=Path(tempfile.gettempdir()) / "vipare-phone-photos")
    parser.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics comparison")
    args = parser.parse_args()

    paths = make_phone_photos(args.photo_dir, args.photos)
    sizes = [p.stat().st_size / 1e6 for p in paths]
    settings = Settings(model_path=args.model, intra_op_threads=args.threads)
    pipeline = Pipeline(settings=settings)
    detector = pipeline.detector
    session = detector.session
    input_name = session.get_inputs()[0].name
    blobs = {p: detector.preprocess(pipeline.decode(p).array)[0] for p in paths}
    h, w = detector.input_size.hw

    yolo = None
    if not args.no_ultralytics:
        from ultralytics import YOLO

        yolo = YOLO(str(args.model), task="detect")
        yolo.predict(str(paths[0]), imgsz=(h, w), conf=settings.conf_threshold, iou=settings.iou_threshold,
                     max_det=settings.max_detections, verbose=False)

    def ultralytics_predict(p: Path) -> object:
        assert yolo is not None
        return yolo.predict(str(p), imgsz=(h, w), conf=settings.conf_threshold, iou=settings.iou_threshold,
                            max_det=settings.max_detections, verbose=False)

    def bare_run(p: Path) -> object:
        return session.run(None, {input_name: blobs[p]})

    stages: dict[str, Callable[[Path], object]] = {
        "decode": pipeline.decode,
        "session.run": bare_run,
        "vipare end to end": pipeline.analyze,
    }
    if yolo is not None:
        stages["ultralytics"] = ultralytics_predict
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(args.rounds):
        for p in paths:
            for name, stage in stages.items():
                times[name].append(_timed(functools.partial(stage, p)))

    import onnxruntime

    print(f"machine: {machine()}; onnxruntime {onnxruntime.__version__}")
    print(f"model: {args.model.name} input {h}x{w}; threads {args.threads or 'all'}")
    print(f"photos: {len(paths)} JPEGs {paths[0].name}.., 12 MP, {min(sizes):.1f}-{max(sizes):.1f} MB, "
          f"EXIF GPS + orientation; {args.rounds} rounds")
    med = {k: statistics.median(v) for k, v in times.items() if v}
    for name, value in med.items():
        print(f"  {name:<20} median {value:7.1f} ms/photo")
    floor = med["decode"] + med["session.run"]
    print(f"vipare end to end / (decode + session.run) = {med['vipare end to end'] / floor:.3f}  (target <= 1.15)")
    if "ultralytics" in med:
        print(f"ultralytics / vipare end to end = {med['ultralytics'] / med['vipare end to end']:.2f}x  "
              "(target >= 2)")


if __name__ == "__main__":
    main()
