"""ONNX metadata stamping keeps Ultralytics' keys and adds vipare's (fast: a tiny hand-made graph)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from training.export import _add_metadata, vipare_metadata  # noqa: E402
from vipare.taxonomy import TAXONOMY_VERSION, class_names  # noqa: E402

ULTRALYTICS_KEYS = {
    "names": "{0: 'dumped_waste', 1: 'overflowing_bin', 2: 'bin'}",
    "imgsz": "[320, 320]",
    "stride": "32",
    "task": "detect",
    "version": "8.4.190",
}


def _tiny_model(path: Path) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "tiny", [x], [y])
    model = helper.make_model(graph)
    for key, value in ULTRALYTICS_KEYS.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_add_metadata_keeps_ultralytics_keys(tmp_path: Path) -> None:
    path = _tiny_model(tmp_path / "tiny.onnx")
    metrics = {"mAP50": 0.8, "per_class": {"bin": {"mAP50": 0.9}}}
    _add_metadata(path, vipare_metadata("abc", metrics, class_names()))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    for key, value in ULTRALYTICS_KEYS.items():
        assert props[key] == value
    assert props["vipare_taxonomy_version"] == TAXONOMY_VERSION
    assert props["vipare_data_hash"] == "abc"
    assert json.loads(props["vipare_metrics"]) == metrics
    assert json.loads(props["vipare_class_names"]) == class_names()


def test_add_metadata_replaces_same_key(tmp_path: Path) -> None:
    path = _tiny_model(tmp_path / "tiny.onnx")
    _add_metadata(path, {"vipare_data_hash": "old"})
    _add_metadata(path, {"vipare_data_hash": "new"})
    props = [p for p in onnx.load(str(path)).metadata_props if p.key == "vipare_data_hash"]
    assert [p.value for p in props] == ["new"]


@pytest.mark.parametrize(
    ("times", "total"),
    [([], None), (["5", "10"], 10.0), (["5", "10", "4", "8"], 18.0)],  # a resume restarts the clock
)
def test_train_seconds_adds_resumed_sessions(times: list[str], total: float | None) -> None:
    from training.export import _train_seconds

    assert _train_seconds([{"time": t} for t in times]) == total
