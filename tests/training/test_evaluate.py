"""Evaluation through the vipare detector: matching and AP against hand-computed values, and a run
over a small YOLO dataset with a tiny ONNX model whose detections are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.onnxgen import make_detector_onnx
from training.evaluate import average_precision, evaluate, evaluate_command, match_detections, roc_auc

T50 = np.array([0.5])


@pytest.mark.parametrize(
    ("gt", "gt_cls", "boxes", "cls", "expected"),
    [
        # exact hit
        ([[0, 0, 10, 10]], [0], [[0, 0, 10, 10]], [0], [True]),
        # right place, wrong class
        ([[0, 0, 10, 10]], [0], [[0, 0, 10, 10]], [1], [False]),
        # IoU 50/100 = 0.5 counts at threshold 0.5
        ([[0, 0, 10, 10]], [0], [[0, 0, 10, 5]], [0], [True]),
        # IoU 40/100 does not
        ([[0, 0, 10, 10]], [0], [[0, 0, 10, 4]], [0], [False]),
        # two detections on one label: the first (highest score) wins even with a lower IoU
        ([[0, 0, 10, 10]], [0], [[0, 0, 10, 6], [0, 0, 10, 10]], [0, 0], [True, False]),
        # two labels, two detections: one each
        ([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0], [[20, 0, 30, 10], [0, 0, 10, 10]], [0, 0], [True, True]),
        # no labels
        (np.zeros((0, 4)), [], [[0, 0, 10, 10]], [0], [False]),
    ],
)
def test_match_detections(gt: list, gt_cls: list, boxes: list, cls: list, expected: list[bool]) -> None:
    correct = match_detections(np.asarray(gt, float).reshape(-1, 4), np.asarray(gt_cls, int),
                               np.asarray(boxes, float), np.asarray(cls, int), T50)
    assert correct[:, 0].tolist() == expected


@pytest.mark.parametrize(
    ("hits", "n_labels", "expected"),
    [
        # One perfect detection: precision 1 up to recall 1, where the closing sentinel (precision 0)
        # takes half of the last 1/100 step: 0.99 + 0.005.
        ([True], 1, 0.995),
        ([False], 1, 0.0),
        # Recall stops at 0.5 with precision 1, then the envelope falls linearly from 0.5 to the
        # sentinel at recall 1: 0.5 + 0.5 * 0.5 / 2.
        ([True, False], 2, 0.625),
        # Precision 0.5 all the way to recall 1.
        ([False, True], 1, 0.5),
    ],
)
def test_average_precision(hits: list[bool], n_labels: int, expected: float) -> None:
    tp = np.cumsum(hits)
    fp = np.cumsum(np.logical_not(hits))
    recall = tp / n_labels if hits else np.zeros(0)
    precision = tp / np.maximum(tp + fp, 1) if hits else np.zeros(0)
    assert average_precision(recall, precision) == pytest.approx(expected, abs=0.006)


@pytest.mark.parametrize(
    ("scores", "positives", "expected"),
    [
        ([0.9, 0.8, 0.1, 0.0], [True, True, False, False], 1.0),  # every positive above every negative
        ([0.1, 0.0, 0.9, 0.8], [True, True, False, False], 0.0),
        ([0.5, 0.5], [True, False], 0.5),  # a tie counts one half
        ([0.9, 0.3, 0.5, 0.1], [True, True, False, False], 0.75),  # 3 of the 4 pairs ordered right
        ([0.7, 0.0, 0.0, 0.0], [True, True, False, False], 0.75),  # nothing found: ties at 0
        ([0.9, 0.8], [True, True], None),  # no negative
        ([], [], None),
    ],
)
def test_roc_auc(scores: list[float], positives: list[bool], expected: float | None) -> None:
    result = roc_auc(np.array(scores, dtype=float), np.array(positives, dtype=bool))
    assert result == (pytest.approx(expected) if expected is not None else None)


NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three 64x64 photos; the tiny model always 'sees' a deposit at x 8..24, y 16..48."""
    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("names:\n  0: dumped_waste\n  1: overflowing_bin\n  2: bin\n")
    labels = {  # file names fix the order of these equal-score detections: the hit comes first
        "a_hit": "0 0.25 0.5 0.25 0.5",  # exactly the model's box
        "b_miss": "2 0.75 0.5 0.2 0.2",  # a bin the model does not find; no deposit in truth
        "c_empty": "",
    }
    for name, text in labels.items():
        Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "images" / "val" / f"{name}.jpg")
        (root / "labels" / "val" / f"{name}.txt").write_text(text)
    raw = np.zeros((1, 7, 1), dtype=np.float32)
    raw[0, :, 0] = [16, 32, 16, 32, 0.9, 0.0, 0.0]
    model = tmp_path / "tiny.onnx"
    make_detector_onnx(model, names=NAMES, imgsz=(64, 64), stride=32, raw=raw)
    return model, root


def test_evaluate_known_detections(dataset: tuple[Path, Path]) -> None:
    model, root = dataset
    metrics = evaluate(model, root).as_dict()
    assert metrics["images"] == 3 and metrics["labels"] == 2
    # dumped_waste: one label, found in 'a_hit' (TP) then wrongly in the two others (FP after it).
    assert metrics["per_class"]["dumped_waste"]["ap50"] == pytest.approx(0.995)
    assert metrics["per_class"]["dumped_waste"]["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["per_class"]["bin"]["ap50"] == 0.0 and metrics["per_class"]["bin"]["recall"] == 0.0
    assert metrics["map50"] == pytest.approx(0.4975)  # mean over the classes with labels
    level = metrics["image_level"]
    assert (level["tp"], level["fp"], level["tn"], level["fn"]) == (1, 2, 0, 0)
    assert level["recall"] == 1.0 and level["specificity"] == 0.0
    assert level["auc"] == 0.5  # every photo scores 0.9: the positive ties with both negatives


def test_evaluate_command_writes_json(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    model, root = dataset
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(evaluate_command, [str(model), str(root / "data.yaml"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["map50"] == pytest.approx(0.4975)


def test_unknown_classes_are_refused(dataset: tuple[Path, Path]) -> None:
    model, root = dataset
    (root / "data.yaml").write_text("names:\n  0: sofa\n")
    result = CliRunner().invoke(evaluate_command, [str(model), str(root)])
    assert result.exit_code == 2
    assert "sofa" in result.output
