"""Image and model-input sizes, with named fields so that width and height are never swapped.

numpy arrays are indexed ``(height, width)`` and Pillow speaks ``(width, height)``; code that passes a
bare pair has to know which one it holds. :class:`Size` names them, and converts at the two edges.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Size"]


class Size(NamedTuple):
    """A size in pixels.

    Attributes:
        width: pixels across.
        height: pixels down.
    """

    width: int
    height: int

    @classmethod
    def of(cls, image: np.ndarray) -> Size:
        """The size of an ``H x W (x C)`` array."""
        height, width = image.shape[:2]
        return cls(int(width), int(height))

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)``, the order numpy shapes use."""
        return self.height, self.width

    @property
    def long_side(self) -> int:
        """The larger of width and height."""
        return max(self.width, self.height)

    def scaled(self, factor: float) -> Size:
        """This size times ``factor``, each side rounded and at least one pixel."""
        return Size(max(1, round(self.width * factor)), max(1, round(self.height * factor)))
