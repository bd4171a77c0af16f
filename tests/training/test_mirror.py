"""The mirrored second view: anchors matched across the mirror, outputs averaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.onnxgen import make_detector_onnx
from training.mirror import main as mirror_command
from vipare import Detector, Settings
from vipare.detection import mirror_index
from vipare.errors import ModelError

NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}
KWARGS = {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 10, "intra_op_threads": 1}


def test_each_anchor_is_matched_with_the_one_at_the_mirrored_column() -> None:
    index = mirror_index(64, 96)  # grids 8x12, 4x6 and 2x3
    assert len(index) == 8 * 12 + 4 * 6 + 2 * 3
    assert (index[index] == np.arange(len(index))).all()  # mirroring twice is the identity
    assert index[0] == 11 and index[12] == 12 + 11  # stride 8: row 0 col 0 <-> col 11; row 1 likewise
    assert index[96] == 96 + 5 and index[96 + 24] == 96 + 24 + 2  # the first anchor of strides 16 and 32


def _model(tmp_path: Path, anchors: int = 84) -> Path:
    # A 64x64 model that always outputs two deposits: at 0.8 in the top-left anchor (stride 8, column 0)
    # and at 0.4 in its mirror (column 7). It ignores its input, so the mirrored run outputs the same.
    raw = np.zeros((1, 7, anchors), dtype=np.float32)
    raw[0, :, 0] = [4, 4, 8, 8, 0.8, 0, 0]
    raw[0, :, 7] = [60, 4, 8, 8, 0.4, 0, 0]
    path = tmp_path / "model.onnx"
    make_detector_onnx(path, names=NAMES, raw=raw)
    return path


def _boxes(detector: Detector) -> list[tuple[float, tuple[int, ...]]]:
    found = detector.detect(np.zeros((64, 64, 3), np.uint8))
    return sorted((round(d.score, 3), tuple(round(v) for v in d.box)) for d in found)


def test_the_mirrored_view_averages_what_the_two_views_see(tmp_path: Path) -> None:
    model = _model(tmp_path)
    assert _boxes(Detector(model, **KWARGS)) == [(0.4, (56, 0, 64, 8)), (0.8, (0, 0, 8, 8))]
    # Each view sees the other's deposit in the mirror: both boxes keep their place at the mean score.
    assert _boxes(Detector(model, **KWARGS, mirrored=True)) == [(0.6, (0, 0, 8, 8)), (0.6, (56, 0, 64, 8))]
    from_env = Detector.from_settings(Settings(model_path=model, intra_op_threads=1, mirrored_view=True))
    assert from_env.mirrored and _boxes(from_env)[0][0] == 0.6


def test_a_head_the_mirror_cannot_match_is_refused_at_load(tmp_path: Path) -> None:
    model = _model(tmp_path, anchors=80)
    Detector(model, **KWARGS)  # one view does not care how the anchors lie
    with pytest.raises(ModelError, match="the mirrored view needs a YOLO11 head"):
        Detector(model, **KWARGS, mirrored=True)


def test_the_command_prints_both_views_side_by_side(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("names:\n  0: dumped_waste\n  1: overflowing_bin\n  2: bin\n")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "images" / "val" / "a.jpg")
    (root / "labels" / "val" / "a.txt").write_text("0 0.0625 0.0625 0.125 0.125")  # the 0.8 box
    out = tmp_path / "mirror.json"
    result = CliRunner().invoke(mirror_command, [str(_model(tmp_path)), str(root), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith(f"| {root} |")]
    assert [row.split(" | ")[1] for row in rows] == ["photo", "photo + mirror"]
    evaluations = json.loads(out.read_text())
    assert [e["mirrored_view"] for e in evaluations] == [False, True]
    assert all(e["image_level"]["recall"] == 1.0 for e in evaluations)
