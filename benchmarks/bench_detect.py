"""Per-photo cost of vipare's detection path, measured side by side in one run.

For each phone-like 12 MP JPEG (see ``phone_photos.py``) and in interleaved rounds, it times:

* decode: ``load_image`` at the size the model needs (JPEG draft + EXIF orientation + GPS);
* session.run: onnxruntime's bare ``session.run`` on an already prepared input;
* vipare end to end: ``Pipeline.analyze(path)`` (decode, letterbox, run, decode+NMS, verdict, location);
* Ultralytics: ``YOLO(<same onnx>).predict(path)`` with the same thresholds and input size.

and prints medians and the two ratios the project holds itself to:
end-to-end / (decode + session.run) <= 1.15 and Ultralytics / vipare >= 2.

The end-to-end figure includes the tiled second look (``VIPARE_TILES_WHEN_EMPTY``) on the photos in
which the whole photo shows no deposit; "whole photo only" is the same pipeline without it. With
``--baseline OLD.onnx`` it also times the pipeline as it was with that model (whole photo only) and
prints end to end / baseline, which a new default model must keep at 2 or under. With ``--mirrored``
it also times the pipeline with the mirrored second view (``VIPARE_MIRRORED_VIEW``, whole photo only)
and prints it against the whole photo only and against the baseline:

    git show f1469c2:weights/vipare-yolo11n.onnx > /tmp/vipare-320.onnx
    python -m benchmarks.bench_detect --photos 20 --rounds 3 --baseline /tmp/vipare-320.onnx --mirrored
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from benchmarks.cli import command
from training.phone_photos import make_phone_photos
from vipare import Pipeline, Settings
from vipare.machine import machine


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


@command(__doc__)
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="ONNX model (default: the shipped model, or VIPARE_MODEL_PATH).")
@click.option("--photos", "count", type=click.IntRange(1), default=20, show_default=True,
              help="Number of 12 MP photos.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Interleaved passes over the photos.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="onnxruntime intra-op threads (0: all cores).")
@click.option("--photo-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "vipare-phone-photos", show_default=True,
              help="Where the photos are made, or found from an earlier run.")
@click.option("--no-ultralytics", is_flag=True, help="Skip the Ultralytics comparison.")
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="An earlier model, timed end to end (whole photo only) beside this one.")
@click.option("--mirrored", is_flag=True, help="Also time the pipeline with the mirrored second view.")
def main(model: Path | None, count: int, rounds: int, threads: int, photo_dir: Path, no_ultralytics: bool,
         baseline: Path | None, mirrored: bool) -> None:
    paths = make_phone_photos(photo_dir, count)
    sizes = [p.stat().st_size / 1e6 for p in paths]
    model = model or Settings().model_path
    settings = Settings(model_path=model, intra_op_threads=threads)
    pipeline = Pipeline(settings=settings)
    detector = pipeline.detector
    session = detector.session
    input_name = session.get_inputs()[0].name
    blobs = {p: detector.preprocess(pipeline.decode(p).array)[0] for p in paths}
    h, w = detector.input_size.hw

    yolo = None
    if not no_ultralytics:
        from ultralytics import YOLO

        yolo = YOLO(str(model), task="detect")
        yolo.predict(str(paths[0]), imgsz=(h, w), conf=settings.conf_threshold, iou=settings.iou_threshold,
                     max_det=settings.max_detections, verbose=False)

    def ultralytics_predict(p: Path) -> object:
        assert yolo is not None
        return yolo.predict(str(p), imgsz=(h, w), conf=settings.conf_threshold, iou=settings.iou_threshold,
                            max_det=settings.max_detections, verbose=False)

    def bare_run(p: Path) -> object:
        return session.run(None, {input_name: blobs[p]})

    whole = Pipeline(detector, settings.model_copy(update={"tiles_when_empty": False}))
    stages: dict[str, Callable[[Path], object]] = {
        "decode": pipeline.decode,
        "session.run": bare_run,
        "vipare end to end": pipeline.analyze,
        "whole photo only": whole.analyze,
    }
    if baseline is not None:
        old = Settings(model_path=baseline, intra_op_threads=threads, tiles_when_empty=False)
        stages["baseline end to end"] = Pipeline(settings=old, privacy=whole.privacy).analyze
    if mirrored:
        two = settings.model_copy(update={"tiles_when_empty": False, "mirrored_view": True})
        stages["mirrored view"] = Pipeline(settings=two, privacy=whole.privacy).analyze
    tiled = sum(whole.looks_again(pipeline.decode(p)) and not whole.analyze(p).verdict.dumping for p in paths)
    if yolo is not None:
        stages["ultralytics"] = ultralytics_predict
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for p in paths:
            for name, stage in stages.items():
                times[name].append(_timed(functools.partial(stage, p)))

    import onnxruntime

    print(f"machine: {machine()}; onnxruntime {onnxruntime.__version__}")
    print(f"model: {model.name} input {h}x{w}; threads {threads or 'all'}")
    print(f"photos: {len(paths)} JPEGs {paths[0].name}.., 12 MP, {min(sizes):.1f}-{max(sizes):.1f} MB, "
          f"EXIF GPS + orientation; {rounds} rounds")
    med = {k: statistics.median(v) for k, v in times.items() if v}
    for name, value in med.items():
        print(f"  {name:<20} median {value:7.1f} ms/photo")
    print(f"  ({tiled} of {len(paths)} photos get the tiled second look)")
    floor = med["decode"] + med["session.run"]
    print(f"whole photo only / (decode + session.run) = {med['whole photo only'] / floor:.3f}  (target <= 1.15)")
    if "baseline end to end" in med:
        print(f"vipare end to end / baseline end to end ({baseline.name if baseline else ''}) = "
              f"{med['vipare end to end'] / med['baseline end to end']:.2f}x  (target <= 2)")
    if "mirrored view" in med:
        print(f"mirrored view / whole photo only = {med['mirrored view'] / med['whole photo only']:.2f}x")
        if "baseline end to end" in med:
            print(f"mirrored view / baseline end to end = {med['mirrored view'] / med['baseline end to end']:.2f}x  "
                  "(target <= 2, were it the default)")
    if "ultralytics" in med:
        print(f"ultralytics / vipare whole photo only (the same work) = "
              f"{med['ultralytics'] / med['whole photo only']:.2f}x  (target >= 2)")


if __name__ == "__main__":
    main()
