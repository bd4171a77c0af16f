"""Describe the machine a measurement ran on, for every printed figure."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_name", "machine"]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """``"<CPU model>, <N> logical cores"``."""
    return f"{cpu_name()}, {os.cpu_count()} logical cores"
