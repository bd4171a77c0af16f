"""The house's rules: the library stays light, and each package imports only what docs/ARCHITECTURE.md allows."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


# --------------------------------------------------------------------------------------------------
# The import map of docs/ARCHITECTURE.md: who may import whom.

PACKAGES = ("vipare", "serving", "training", "benchmarks", "tests")
ROOT = Path(__file__).resolve().parents[1]
MAY_NOT_IMPORT = {
    "vipare": ("serving", "training", "benchmarks", "tests"),
    "serving": ("training", "benchmarks", "tests"),
    "training": ("serving", "benchmarks", "tests"),
    "benchmarks": ("tests",),
    "tests": ("benchmarks",),
}
# A library module naming an upper layer as code: ``serving.cli``, ``training/``, ``"training:..."``.
UPPER_NAME = re.compile(r"\b(serving|training)\s*(\.\s*[A-Za-z_]|/|:[A-Za-z_])")


@pytest.fixture(scope="module")
def graph() -> Any:
    import grimp  # the [dev] extra: without it the rules must fail, not skip

    sys.path.insert(0, str(ROOT))  # benchmarks and tests are not installed packages
    try:
        return grimp.build_graph(*PACKAGES, include_external_packages=False)
    finally:
        sys.path.remove(str(ROOT))


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_packages_import_only_what_the_map_allows(graph: Any, package: str) -> None:
    found = [
        f"{line['importer']}:{line['line_number']} imports {line['imported']}"
        for forbidden in MAY_NOT_IMPORT[package]
        for match in graph.find_matching_direct_imports(import_expression=f"{package}.** -> {forbidden}.**")
        for line in graph.get_import_details(importer=match["importer"], imported=match["imported"])
    ]
    assert not found, f"{package} may not import {', '.join(MAY_NOT_IMPORT[package])}:\n" + "\n".join(found)


def test_the_library_names_no_upper_layer_in_any_form() -> None:
    """Not in an import, a string to load later, a path or a comment: the library knows nothing above it."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "vipare").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if UPPER_NAME.search(line)
    ]
    assert not found, "vipare names serving or training:\n" + "\n".join(found)


def test_there_is_no_import_cycle(graph: Any) -> None:
    """Lazy imports inside functions count: they are how a cycle hides."""
    cycles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:  # importer -> imported -> ... -> importer; one entry per cycle, from its smallest module
                loop = back
                start = loop.index(min(loop))
                cycles.add(loop[start:] + loop[:start] + (loop[start],))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in sorted(cycles))


@pytest.mark.parametrize(
    ("line", "names_upper"),
    [
        ('    "serve": "serving.cli:serve",', True),
        ("from training.evaluate import evaluate_command", True),
        ("mappings live in ``training/``", True),
        ('"training:evaluate"', True),
        ("the training and Ultralytics' own reader", False),
        ("keep serving it", False),
    ],
)
def test_upper_name_pattern(line: str, names_upper: bool) -> None:
    assert bool(UPPER_NAME.search(line)) is names_upper
