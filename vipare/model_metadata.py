"""The model contract: the metadata the Ultralytics ONNX exporter writes, read back and checked.

A model must carry ``names`` (class ids 0..n-1 to names), ``imgsz`` (``[height, width]``, multiples
of the stride) and ``stride``; the exporter writes all three. :func:`parse_metadata` reads them with
a literal parser (never ``eval()``) and refuses a model that lacks one, or is not a detection model,
with a :class:`~vipare.errors.ModelMetadataError` that says how to re-export it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vipare.errors import ModelMetadataError
from vipare.size import Size

__all__ = ["REQUIRED_METADATA", "TILE_THRESHOLDS_KEY", "VERDICT_THRESHOLDS_KEY", "ModelMetadata", "parse_metadata"]

REQUIRED_METADATA = ("names", "imgsz", "stride")
"""Metadata keys a model must carry (the Ultralytics ONNX exporter writes all three)."""

_REEXPORT_HINT = (
    "re-export the model with Ultralytics (`YOLO(weights).export(format='onnx')`, as vipare's export step does), "
    "which writes names, imgsz and stride into the ONNX metadata"
)


@dataclass(frozen=True)
class ModelMetadata:
    """What vipare reads from an ONNX model's custom metadata.

    Attributes:
        names: class names in output order (index = class id).
        input_size: model input size in pixels (the metadata's ``imgsz``, written ``[height, width]``).
        stride: the model's largest stride in pixels.
        version: the exporter's ``version`` entry (Ultralytics version), when present.
        taxonomy_version: ``vipare_taxonomy_version``, when the model was trained on vipare's classes.
        verdict_thresholds: ``vipare_verdict_thresholds``, the per-class scores at or above which a
            deposit makes a photo count as dumping, calibrated on held-out photos
            (see the model card); empty when the model carries none.
        tile_thresholds: ``vipare_tile_thresholds``, the per-class scores a deposit found only by the
            tiled second look (:mod:`vipare.tiles`) must reach; empty when the model carries none.
    """

    names: tuple[str, ...]
    input_size: Size
    stride: int
    version: str | None = None
    taxonomy_version: str | None = None
    verdict_thresholds: Mapping[str, float] = field(default_factory=dict)
    tile_thresholds: Mapping[str, float] = field(default_factory=dict)


VERDICT_THRESHOLDS_KEY = "vipare_verdict_thresholds"
TILE_THRESHOLDS_KEY = "vipare_tile_thresholds"


def _thresholds(meta: Mapping[str, str], names: tuple[str, ...], key: str) -> dict[str, float]:
    if key not in meta:
        return {}
    raw = _literal(meta, key)
    ok = isinstance(raw, dict) and all(
        k in names and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for k, v in raw.items()
    )
    if not ok:
        raise ModelMetadataError(
            f"model metadata '{key}' must map class names of the model to scores in [0, 1], "
            f"got {meta[key]!r:.200}; calibrate the model again"
        )
    return {str(k): float(v) for k, v in raw.items()}


def _literal(meta: Mapping[str, str], key: str) -> Any:
    if key not in meta:
        raise ModelMetadataError(f"model metadata has no '{key}' entry; {_REEXPORT_HINT}")
    try:
        return ast.literal_eval(meta[key])  # a literal parser: never eval() metadata
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ModelMetadataError(f"model metadata '{key}' is not a literal: {meta[key]!r:.200}") from exc


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not float(value).is_integer() or value < 1:
        return None
    return int(value)


def parse_metadata(meta: Mapping[str, str]) -> ModelMetadata:
    """Read class names, input size and stride from an ONNX model's custom metadata map.

    Args:
        meta: key -> string map as written by Ultralytics' exporter, e.g.
            ``{"names": "{0: 'dumped_waste', 1: 'bin'}", "imgsz": "[640, 640]", "stride": "32"}``.

    Returns:
        The parsed metadata.

    Raises:
        ModelMetadataError: when a required key is missing or malformed, or the model is not a
            detection model.
    """
    task = meta.get("task")
    if task is not None and task != "detect":
        raise ModelMetadataError(f"model task is '{task}'; vipare needs a detection ('detect') model")

    raw_names = _literal(meta, "names")
    if isinstance(raw_names, list | tuple):
        raw_names = dict(enumerate(raw_names))
    try:
        names_map = {int(k): v for k, v in raw_names.items()}
    except (AttributeError, TypeError, ValueError):
        names_map = {}
    if (
        not names_map
        or sorted(names_map) != list(range(len(names_map)))
        or not all(isinstance(v, str) and v for v in names_map.values())
    ):
        raise ModelMetadataError(
            f"model metadata 'names' must map class ids 0..n-1 to names, got {meta['names']!r:.200}"
        )
    names = tuple(names_map[i] for i in range(len(names_map)))

    stride = _positive_int(_literal(meta, "stride"))
    if stride is None:
        raise ModelMetadataError(f"model metadata 'stride' must be a positive integer: {meta['stride']!r}")

    raw_size = _literal(meta, "imgsz")
    sizes = list(raw_size) if isinstance(raw_size, list | tuple) else [raw_size]
    if len(sizes) == 1:
        sizes *= 2  # a single number means a square input, as in Ultralytics
    height, width = (_positive_int(s) for s in sizes) if len(sizes) == 2 else (None, None)
    if height is None or width is None or height % stride or width % stride:
        raise ModelMetadataError(
            f"model metadata 'imgsz' must be [height, width], positive multiples of stride {stride}, "
            f"got {meta['imgsz']!r}"
        )

    return ModelMetadata(
        names=names,
        input_size=Size(width, height),
        stride=stride,
        version=meta.get("version"),
        taxonomy_version=meta.get("vipare_taxonomy_version"),
        verdict_thresholds=_thresholds(meta, names, VERDICT_THRESHOLDS_KEY),
        tile_thresholds=_thresholds(meta, names, TILE_THRESHOLDS_KEY),
    )
