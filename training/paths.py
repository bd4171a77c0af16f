"""Where the training code finds the shared, read-only material: ``../shared`` beside the checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHARED_DATASETS", "SHARED_DIR", "SHARED_PRETRAINED"]

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"
SHARED_DATASETS = SHARED_DIR / "datasets"
SHARED_PRETRAINED = SHARED_DIR / "pretrained"
