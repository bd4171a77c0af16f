"""The library stays light: importing it loads no training or web framework."""

from __future__ import annotations

import importlib
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


def test_light_modules_load_no_runtime() -> None:
    """A batch job's own process uses errors, results, settings and geotag: they load no onnxruntime or OpenCV."""
    code = (
        "import sys, vipare.errors, vipare.results, vipare.settings, vipare.geotag, vipare.taxonomy;"
        "print(','.join(m for m in ('onnxruntime', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loaded by the light modules: {out.stdout.strip()}"


def test_every_public_name_has_its_module() -> None:
    assert sorted(vipare.__all__) == sorted(vipare._HOMES)
    for name, home in vipare._HOMES.items():
        assert getattr(vipare, name) is getattr(importlib.import_module(f"vipare.{home}"), name)
    try:
        vipare.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
