"""Per-class verdict thresholds chosen on calibration photos and written into the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.onnxgen import make_detector_onnx
from training.calibrate import Scores, choose, verdicts, write_thresholds
from training.evaluate import covered
from vipare import Detector


def _scores(first: list[list[float]], truth: list[bool], tiled: list[list[float]] | None = None) -> Scores:
    a = np.array(first, dtype=float)
    return Scores(("dumped_waste", "overflowing_bin"), a, np.array(tiled, dtype=float) if tiled else np.zeros_like(a),
                  np.array(truth, dtype=bool))


def test_an_ordinary_container_read_as_overflowing_gets_a_higher_bar() -> None:
    # Deposits score 0.4-0.9 as dumped_waste; clean photos have bins read as overflowing at 0.5-0.6.
    scores = _scores(
        [[0.9, 0.0], [0.5, 0.0], [0.4, 0.0], [0.0, 0.8], [0.0, 0.55], [0.0, 0.6], [0.0, 0.5], [0.0, 0.0]],
        [True, True, True, True, False, False, False, False],
    )
    chosen = choose(scores, target_recall=1.0)
    assert chosen["thresholds"] == {"dumped_waste": 0.25, "overflowing_bin": 0.61}
    assert (chosen["recall"], chosen["specificity"]) == (1.0, 1.0)
    assert verdicts(scores, np.array([0.25, 0.61]))[:4].all()


def test_the_recall_target_wins_over_specificity() -> None:
    scores = _scores([[0.9, 0], [0.3, 0], [0.35, 0], [0.0, 0]], [True, True, False, False])
    every_deposit = choose(scores, target_recall=1.0)
    assert every_deposit["thresholds"]["dumped_waste"] <= 0.3 and every_deposit["specificity"] == 0.5
    half = choose(scores, target_recall=0.5)
    assert half["thresholds"]["dumped_waste"] == 0.36 and (half["recall"], half["specificity"]) == (0.5, 1.0)


def test_the_second_look_counts_where_the_first_found_nothing() -> None:
    scores = _scores([[0.0, 0.0], [0.0, 0.0]], [True, False], tiled=[[0.7, 0.0], [0.0, 0.0]])
    chosen = choose(scores, target_recall=1.0)
    assert chosen["specificity"] == 1.0 and chosen["tile_thresholds"]["dumped_waste"] <= 0.7


def test_tiles_finding_deposits_in_clean_photos_get_a_margin() -> None:
    # The whole photo finds the deposits at 0.6; the tiles find "deposits" in both clean photos at 0.5.
    scores = _scores([[0.6, 0.0], [0.6, 0.0], [0.0, 0.0], [0.0, 0.0]], [True, True, False, False],
                     tiled=[[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.5, 0.0]])
    chosen = choose(scores, target_recall=1.0)
    assert (chosen["recall"], chosen["specificity"]) == (1.0, 1.0)
    assert chosen["tile_thresholds"]["dumped_waste"] > 0.5
    bars = np.array(list(chosen["thresholds"].values()))
    assert not verdicts(scores, bars, np.array(list(chosen["tile_thresholds"].values())))[2:].any()


@pytest.mark.parametrize(
    ("truth", "message"), [([True, True], "with and without"), ([True, False], "no thresholds reach")]
)
def test_impossible_calibrations_say_why(truth: list[bool], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose(_scores([[0.0, 0.0], [0.0, 0.0]], truth), target_recall=0.9)


def test_thresholds_written_into_the_model_are_read_at_load(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    make_detector_onnx(path, names={0: "dumped_waste", 1: "overflowing_bin", 2: "bin"},
                       raw=np.zeros((1, 7, 4), np.float32), metadata={"vipare_verdict_thresholds": "{'bin': 0.5}"})
    write_thresholds(path, {"dumped_waste": 0.31, "overflowing_bin": 0.72},
                     {"dumped_waste": 0.56, "overflowing_bin": 0.97})
    detector = Detector(path, conf_threshold=0.25, iou_threshold=0.45, max_detections=10, intra_op_threads=1)
    assert detector.verdict_thresholds == {"dumped_waste": 0.31, "overflowing_bin": 0.72}
    assert detector.tile_thresholds == {"dumped_waste": 0.56, "overflowing_bin": 0.97}
    assert detector.names == ("dumped_waste", "overflowing_bin", "bin")
    assert not path.with_suffix(".calibrating").exists()


def test_half_a_bag_inside_a_pile_box_counts_as_covered() -> None:
    bags = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60], [8, 0, 18, 10]], dtype=float)
    pile = np.array([[0, 0, 25, 12]], dtype=float)
    # The first bag is inside; the second has 5 of 10 columns inside (half); the third is elsewhere;
    # the fourth is wholly inside.
    assert covered(bags, pile).tolist() == [True, True, False, True]
    assert covered(bags, np.zeros((0, 4))).tolist() == [False] * 4
    assert covered(np.zeros((0, 4)), pile).tolist() == []


def test_an_adapted_model_keeps_the_base_model_s_thresholds(tmp_path: Path) -> None:
    from training.adapt import carry_thresholds
    from training.model_card import render

    names = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}
    old, new, plain = tmp_path / "old.onnx", tmp_path / "new.onnx", tmp_path / "plain.onnx"
    for path in (old, new, plain):
        make_detector_onnx(path, names=names, raw=np.zeros((1, 7, 4), np.float32))
    write_thresholds(old, {"dumped_waste": 0.33, "overflowing_bin": 0.61}, {"dumped_waste": 0.58})
    carried = carry_thresholds(old, new)
    detector = Detector(new, conf_threshold=0.25, iou_threshold=0.45, max_detections=10, intra_op_threads=1)
    assert detector.verdict_thresholds == {"dumped_waste": 0.33, "overflowing_bin": 0.61}
    assert detector.tile_thresholds == {"dumped_waste": 0.58}
    assert carry_thresholds(plain, new) is None  # nothing to carry from an uncalibrated model
    card = {"model": "new.onnx", "bytes": 1, "sha256": "0" * 64, "imgsz": 64, "class_names": list(names.values()),
            "taxonomy_version": "1", "base_model": "old", "verdict_thresholds_carried": carried}
    assert "| overflowing_bin | 0.61 | n/a |" in render(card) and "Carried from `old.onnx`" in render(card)


def test_clean_photos_the_model_gives_nothing_are_counted_as_not_measuring_specificity() -> None:
    # Two clean photos: one read as overflowing at 0.3 in the whole photo, one found only by a tile; the
    # third gets no deposit detection anywhere, so no threshold can make it a false alarm.
    scores = _scores([[0.9, 0.0], [0.0, 0.3], [0.0, 0.0], [0.0, 0.0]], [True, False, False, False],
                     tiled=[[0.0, 0.0], [0.0, 0.0], [0.6, 0.0], [0.0, 0.0]])
    chosen = choose(scores, target_recall=1.0)
    assert (chosen["negatives"], chosen["negatives_firing"], chosen["negatives_firing_in_tiles"]) == (3, 1, 1)


def test_a_floor_keeps_thresholds_up_where_the_clean_photos_cannot_rank_them() -> None:
    # No clean photo fires: every threshold is as specific as every other, and the lowest would win.
    scores = _scores([[0.9, 0.0], [0.6, 0.0], [0.0, 0.7], [0.0, 0.0], [0.0, 0.0]], [True, True, True, False, False])
    assert choose(scores, target_recall=1.0)["thresholds"] == {"dumped_waste": 0.25, "overflowing_bin": 0.25}
    held = choose(scores, target_recall=1.0, floor=0.35)
    assert held["thresholds"] == {"dumped_waste": 0.35, "overflowing_bin": 0.35} and held["floor"] == 0.35
    # A deposit found at 0.3 only: the recall target needs a threshold below the floor, and gets it.
    weak = _scores([[0.9, 0.0], [0.3, 0.0], [0.0, 0.0]], [True, True, False])
    below = choose(weak, target_recall=1.0, floor=0.35)
    assert below["thresholds"]["dumped_waste"] <= 0.3 and below["recall"] == 1.0 and below["floor"] is None


def test_the_card_says_when_the_clean_calibration_photos_cannot_rank_thresholds() -> None:
    from training.calibrate import MIN_NEGATIVES_FIRING
    from training.card_sections import calibration

    record = {"thresholds": {"dumped_waste": 0.25}, "tile_thresholds": {"dumped_waste": 0.75}, "recall": 0.977,
              "specificity": 1.0, "target_recall": 0.95, "positives": 217, "negatives": 56,
              "dataset": "runs/data/calib", "tiles_when_empty": True, "rule": "highest specificity",
              "negatives_firing_in_tiles": 12}
    few = "\n".join(calibration({"verdict_calibration": {**record, "negatives_firing": 1}}))
    assert "get a deposit detection (a score of 0.25 or more): 1 of 56 in the whole photo, 12 in its tiles" in few
    assert "too few to rank the verdict thresholds" in few and "as low as it allows" in few  # before the floor
    floored = "\n".join(calibration({"verdict_calibration": {**record, "negatives_firing": 1, "floor": 0.35}}))
    assert "none went below the uncalibrated default, 0.35" in floored
    needed = "\n".join(calibration({"verdict_calibration": {**record, "negatives_firing": 1, "floor": None}}))
    assert "the recall target needed thresholds below the uncalibrated default" in needed
    enough = "\n".join(calibration({"verdict_calibration": {**record, "negatives_firing": MIN_NEGATIVES_FIRING}}))
    assert f"{MIN_NEGATIVES_FIRING} of 56 in the whole photo" in enough and "too few" not in enough
    older = "\n".join(calibration({"verdict_calibration": record}))  # recorded before the count existed
    assert "get a deposit detection" not in older and "held out of the run that made the model" in older


def test_calibrate_holds_the_floor_and_writes_it_into_the_model_and_its_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from training.calibrate import calibrate

    root = tmp_path / "calib"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("names:\n  0: dumped_waste\n  1: overflowing_bin\n  2: bin\n")
    for name, text in {"deposit": "0 0.25 0.5 0.25 0.5", "clean_1": "", "clean_2": "2 0.75 0.5 0.2 0.2"}.items():
        Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "images" / "val" / f"{name}.jpg")
        (root / "labels" / "val" / f"{name}.txt").write_text(text)
    raw = np.zeros((1, 7, 1), dtype=np.float32)
    raw[0, :, 0] = [16, 32, 16, 32, 0.9, 0.0, 0.0]  # a deposit at 0.9 in every photo, the clean ones too
    model = tmp_path / "model.onnx"
    make_detector_onnx(model, names={0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}, raw=raw)
    model.with_suffix(".json").write_text('{"model": "model.onnx"}\n')

    monkeypatch.delenv("VIPARE_MIRRORED_VIEW", raising=False)
    record = calibrate(model, root, ("val",), 0.95, tiles=False)

    # Two clean photos fire, fewer than MIN_NEGATIVES_FIRING: no threshold below the default.
    assert (record["negatives"], record["negatives_firing"], record["floor"]) == (2, 2, 0.35)
    assert record["thresholds"] == {"dumped_waste": 0.35, "overflowing_bin": 0.35}
    detector = Detector(model, conf_threshold=0.25, iou_threshold=0.45, max_detections=10, intra_op_threads=1)
    assert detector.verdict_thresholds == {"dumped_waste": 0.35, "overflowing_bin": 0.35}
    twin = json.loads(model.with_suffix(".json").read_text())
    assert twin["verdict_calibration"]["floor"] == 0.35 and "none below 0.35" in twin["verdict_calibration"]["rule"]
    assert twin["verdict_calibration"]["mirrored_view"] is False  # VIPARE_MIRRORED_VIEW unset: one view
