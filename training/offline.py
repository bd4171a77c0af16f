"""Keep Ultralytics from reaching the network (no internet on the training machines).

Ultralytics checks connectivity, downloads fonts for plots and datasets, and pings analytics.
``ensure_offline`` must run before ``ultralytics`` is first imported: it sets ``YOLO_OFFLINE`` (read
by Ultralytics at import time to mark itself offline) and replaces the font check used by dataset
checks, which would otherwise try to download ``Arial.ttf``.
"""

from __future__ import annotations

import os

__all__ = ["ensure_offline"]

OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


def _no_font(font: str = "Arial.ttf") -> None:
    """Stand-in for ``check_font``: plots are off, so no font is ever needed."""
    del font


def ensure_offline() -> None:
    """Configure Ultralytics for a machine without internet; idempotent."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import SETTINGS

    data_utils.check_font = _no_font  # type: ignore[assignment]
    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})
