"""Argument checks shared by the detectors: one wording for every setting of the same kind."""

from __future__ import annotations

__all__ = ["check_fraction", "check_threads"]


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` (the argument ``name``: a score or IoU threshold) is within [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


def check_threads(intra_op_threads: int) -> None:
    """Raise ValueError unless ``intra_op_threads`` is 0 (onnxruntime's default) or more."""
    if intra_op_threads < 0:
        raise ValueError(f"intra_op_threads must be 0 (default) or more, got {intra_op_threads}")
