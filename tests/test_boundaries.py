"""The library stays light: importing it loads no training or web framework."""

from __future__ import annotations

import subprocess
import sys

import vipare

HEAVY = ("torch", "ultralytics", "fastapi", "starlette", "uvicorn", "openvino", "onnx")


def test_import_vipare_loads_no_heavy_framework() -> None:
    code = (
        "import sys, vipare, vipare.cli, vipare.draw, vipare.pipeline;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported by vipare: {out.stdout.strip()}"


def test_public_api_is_explicit_and_importable() -> None:
    for name in vipare.__all__:
        assert hasattr(vipare, name), name
    public = {n for n in dir(vipare) if not n.startswith("_")}
    # Submodules are reachable as attributes; everything else public must be listed.
    modules = {n for n in public if type(getattr(vipare, n)).__name__ == "module"}
    assert public - modules == set(vipare.__all__)
