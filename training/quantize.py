"""INT8 copy of a vipare ONNX model, calibrated on training photos, for CPUs where time is short.

Static quantization with onnxruntime (QDQ format): convolution weights per output channel to int8,
activations to uint8 with ranges measured on ``--calibration`` training photos, each preprocessed by
the vipare detector exactly as in production. Three parts stay in float, because 8 bits cost them
accuracy out of proportion to their share of the time: the first convolution (it sees raw pixels),
the attention block (``C2PSA``, its softmax and matrix products) and, in the detection head, all but
the convolutions: the activations and the box decoder (the distribution-focal-loss softmax and the box
arithmetic, whose outputs are pixel coordinates). The class names, input size and vipare's metadata are copied
from the float model, with a ``vipare_quantization`` entry added.

    python -m training.quantize weights/vipare-yolo11n.onnx --data runs/data/swcn/data.yaml \\
        --out weights/vipare-yolo11n-int8.onnx
    vipare evaluate weights/vipare-yolo11n-int8.onnx runs/data/swcn/data.yaml

Measure it before shipping it: 8 bits move scores a little, and a model whose accuracy drops more
than the time it saves is worth is not an improvement.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import numpy as np
import onnx

__all__ = ["FLOAT_LAYERS", "HEAD_PREFIX", "float_nodes", "quantize_model"]

HEAD_PREFIX = "/model.23/"
"""Ultralytics names the Detect head's nodes ``/model.<last>/...``; YOLO11n's head is layer 23."""
FLOAT_LAYERS = ("/model.0/", "/model.10/")
"""YOLO11n's first convolution and its attention block (C2PSA), left in float."""
FLOAT_HEAD_OPS = frozenset({"Softmax", "Sub", "Add", "Div", "Mul", "Concat", "Sigmoid", "Reshape", "Transpose",
                            "Split", "Slice"})
"""Operators of the head left in float: its activations and its box and score decoding (its convolutions
are quantized)."""


def _calibration_blobs(model: Path, photos: Sequence[Path]) -> Iterator[dict[str, np.ndarray]]:
    from vipare.detection import Detector
    from vipare.imaging import load_image
    from vipare.settings import Settings

    detector = Detector.from_settings(Settings(model_path=model, intra_op_threads=1))
    name = detector.session.get_inputs()[0].name
    for photo in photos:
        blob, _ = detector.preprocess(load_image(photo, target_size=detector.input_size).array)
        yield {name: blob}


def float_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes left in float: :data:`FLOAT_LAYERS` whole, and the head's decoding (:data:`FLOAT_HEAD_OPS`)."""
    return [
        n.name for n in graph.node
        if n.name.startswith(FLOAT_LAYERS) or (n.name.startswith(HEAD_PREFIX) and n.op_type in FLOAT_HEAD_OPS)
    ]


def quantize_model(model: Path, out: Path, photos: Sequence[Path]) -> dict[str, object]:
    """Write an INT8 (QDQ) copy of ``model`` to ``out``, calibrated on ``photos``.

    Returns:
        What was done, as recorded in the ``vipare_quantization`` metadata entry.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not photos:
        raise ValueError("no calibration photos: give a dataset with a training split")
    blobs = _calibration_blobs(model, photos)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(blobs, None)

    source = onnx.load(str(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared))
        excluded = float_nodes(onnx.load(str(prepared)).graph)
        quantize_static(
            str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
        )
    record: dict[str, object] = {
        "from": model.name,
        "format": "QDQ, weights int8 per channel, activations uint8",
        "calibration_photos": len(photos),
        "float_nodes": len(excluded),
    }
    quantized = onnx.load(str(out))
    del quantized.metadata_props[:]
    for prop in source.metadata_props:
        if prop.key != "vipare_quantization":
            quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.metadata_props.add(key="vipare_quantization", value=json.dumps(record))
    onnx.save(quantized, str(out))
    return record


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="data.yaml whose training photos calibrate.")
@click.option("--calibration", type=click.IntRange(1), default=200, show_default=True,
              help="Training photos to calibrate on.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: MODEL-int8.onnx beside MODEL.")
def main(model: Path, data: Path, calibration: int, out: Path | None) -> None:
    """Write an INT8 copy of the vipare ONNX model MODEL and print its quantization record."""
    from training.validate import split_images

    photos = split_images(data, "train")
    step = max(1, len(photos) // calibration)
    chosen = photos[::step][:calibration]  # spread over the split, not its first folder
    target = out or model.with_name(f"{model.stem}-int8.onnx")
    click.echo(json.dumps({"out": str(target), **quantize_model(model, target, chosen)}, indent=2))


if __name__ == "__main__":
    main()
