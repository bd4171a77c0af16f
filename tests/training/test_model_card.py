"""The model card is rendered from the JSON twin: figures in, the same figures out."""

from __future__ import annotations

from pathlib import Path

from training.model_card import render

ROOT = Path(__file__).resolve().parents[2]

EVALUATION = {
    "dataset": "runs/data/swcn/data.yaml", "split": "val", "images": 670, "labels": 1840,
    "map50": 0.8712, "map50_95": 0.61, "ultralytics_map50": 0.8701, "conf_threshold": 0.25,
    "iou_threshold": 0.45, "precision": 0.8, "recall": 0.75,
    "per_class": {"dumped_waste": {"labels": 385, "ap50": 0.8123, "ap50_95": 0.5, "precision": 0.7, "recall": None}},
    "image_level": {"rule": "best deposit >= threshold", "verdict_threshold": 0.35,
                    "deposit_classes": ["dumped_waste"], "positives": 489, "negatives": 181,
                    "tp": 450, "fp": 20, "tn": 161, "fn": 39, "accuracy": 0.912, "recall": 0.9202,
                    "specificity": 0.8896},
}
CARD = {
    "model": "vipare-yolo11n.onnx", "bytes": 10_539_791, "sha256": "ab" * 32, "imgsz": 320, "opset": 17,
    "class_names": ["dumped_waste", "overflowing_bin", "bin"], "taxonomy_version": "1",
    "base_model": "YOLO11n COCO", "datasets": ["street-waste-cn: CC BY 4.0"], "epochs_done": 20,
    "train_seconds": 7200, "train_config": {"batch": 16, "seed": 0}, "device": "cpu",
    "software": {"torch": "2.14.1"}, "data_hash": "d" * 64,
}


def test_card_carries_the_measured_figures() -> None:
    text = render({**CARD, "evaluations": [EVALUATION],
                   "cost": {"12 MP phone JPEGs": {"photos": 10, "rounds": 2, "median_ms": 61.2,
                                                  "median_cpu_ms": 98.4, "threads": "all", "machine": "cpu x"}}})
    assert "sha256 `" + "ab" * 32 + "`" in text
    assert "mAP50 0.871, mAP50-95 0.610" in text and "mAP50 0.870)" in text
    assert "| dumped_waste | 385 | 0.812 | 0.500 | 0.700 | n/a |" in text
    assert "recall 0.920, specificity 0.890" in text
    assert "| 12 MP phone JPEGs (10 x 2) | 61.2 | 98.4 | all | cpu x |" in text
    assert "20 epochs at 320 px" in text and "2.00 h" in text
    assert "CC BY 4.0" in text


def test_card_says_the_boxes_were_merged_and_ultralytics_did_not_merge_them() -> None:
    plain = render({**CARD, "evaluations": [EVALUATION]})
    merged = render({**CARD, "evaluations": [{**EVALUATION, "box_merge_iou": 0.7}]})
    assert "merged" not in plain  # older records, and evaluations with VIPARE_BOX_MERGE_IOU=1
    assert "(score > 0.25, NMS IoU 0.45, boxes merged above IoU 0.7)" in merged
    assert "(Ultralytics' validator on the same ONNX file, boxes as drawn, not merged: mAP50 0.870)" in merged


UNMEASURED = ("Evaluation", "Second look in tiles", "Cost per photo on a CPU", "Comparisons at the same budget",
              "Augmentation ablation", "Energy")


def _unmeasured(text: str) -> list[str]:
    """The sections that say they were not measured."""
    return [title for title in UNMEASURED
            if text.split(f"## {title}", 1)[1].split("\n## ", 1)[0].count("Not measured yet")]


def test_card_says_what_is_not_measured() -> None:
    assert _unmeasured(render(CARD)) == list(UNMEASURED)
    assert "Not calibrated: every deposit class uses the default threshold 0.35." in render(CARD)


COMPARISONS = {
    "budget": {"epochs": 5, "fraction": 0.25, "train_photos": 670, "batch": 16, "seed": 0, "device": "cpu",
               "data": "runs/data/swcn/data.yaml"},
    "timing": {"photos": 20, "rounds": 3, "what": "Pipeline.analyze, decode to result", "threads": "all",
               "machine": "cpu x"},
    "runs": [
        {"name": "scratch-320", "start": "random weights", "imgsz": 320, "epochs": 5, "train_minutes": 6.51,
         "device": "cpu", "map50": 0.0123, "map50_95": 0.004, "ap50_dumped_waste": 0.0101, "image_recall": 0.05,
         "image_specificity": 0.99, "eval_images": 670, "ms_per_photo": 12.34, "cpu_ms_per_photo": 20.0},
        {"name": "coco-640", "start": "imported COCO YOLO11n", "imgsz": 640, "epochs": 5, "train_minutes": 30.0,
         "device": "cpu", "map50": 0.8, "map50_95": 0.5, "ap50_dumped_waste": 0.7, "image_recall": None,
         "image_specificity": 0.9, "eval_images": 670, "ms_per_photo": 40.0, "cpu_ms_per_photo": 70.0},
    ],
}


def test_card_has_the_comparison_table() -> None:
    text = render({**CARD, "comparisons": COMPARISONS})
    assert "Comparisons at the same budget" not in _unmeasured(text)
    assert "5 epochs on 670 training photos (25% of the training split)" in text
    assert "| scratch-320 | random weights | 320 | 5 | 6.5 | 0.012 | 0.004 | 0.010 | 0.050 | 0.990 | n/a | 12.3 | " \
        "20.0 |" in text
    assert "| coco-640 | imported COCO YOLO11n | 640 | 5 | 30.0 | 0.800 | 0.500 | 0.700 | n/a | 0.900 | n/a | 40.0 | " \
        "70.0 |" in text
    assert "### Starting point and input size" in text


def test_card_has_the_input_size_table_beside_the_earlier_one() -> None:
    sizes = {
        **COMPARISONS,
        "timing": {**COMPARISONS["timing"], "kind": "12 MP phone JPEGs"},
        "runs": [{**COMPARISONS["runs"][1], "name": "shipped-480", "start": "the shipped model", "imgsz": 480,
                  "image_auc": 0.9712}],
    }
    text = render({**CARD, "comparisons": [COMPARISONS, sizes]})
    assert "### Starting point and input size" in text and "### Input size: the shipped model fine-tuned" in text
    assert "| shipped-480 | the shipped model | 480 | 5 | 30.0 | 0.800 | 0.500 | 0.700 | n/a | 0.900 | 0.971 |" in text
    assert "20 12 MP phone JPEGs x 3 rounds" in text and "--sizes --phone-photos 10" in text


def test_card_compares_the_int8_copy_with_the_float_model() -> None:
    int8_eval = {**EVALUATION, "map50": 0.8612,
                 "per_class": {"dumped_waste": {**EVALUATION["per_class"]["dumped_waste"], "ap50": 0.7911}},
                 "image_level": {**EVALUATION["image_level"], "recall": 0.9, "specificity": 0.88}}
    other_data = {**int8_eval, "dataset": "elsewhere"}  # no float evaluation to set it beside: left out
    int8 = {"model": "m-int8.onnx", "bytes": 3_800_000, "sha256": "cd" * 32,
            "quantization": {"format": "QDQ", "calibration_photos": 200, "float_nodes": 90},
            "evaluations": [int8_eval, other_data],
            "cost": {"640 px": {"photos": 20, "rounds": 3, "machine": "cpu x",
                                "float": {"ms_per_photo": 30.0, "cpu_ms_per_photo": 50.0},
                                "int8": {"ms_per_photo": 20.0, "cpu_ms_per_photo": 35.0}}}}
    text = render({**CARD, "evaluations": [EVALUATION], "int8": int8})
    assert "`m-int8.onnx`, 3.8 MB" in text and "calibrated on 200 training photos" in text
    assert "| runs/data/swcn/data.yaml (val) | 670 | 0.871 / 0.861 | 0.812 / 0.791 | 0.920 / 0.900 | 0.890 / 0.880 |" \
        in text
    assert "elsewhere" not in text
    assert "| 640 px (20 x 3, models in turn) | 30.0 / 20.0 | 50.0 / 35.0 | 1.50x | all | cpu x |" in text
    assert "INT8" not in render(CARD)


def test_cost_is_measured_per_model_over_every_photo_and_round(tmp_path: Path) -> None:
    from tests.onnxgen import make_centre_deposit_onnx
    from training.compare import time_models
    from training.model_card import measure_cost

    model = make_centre_deposit_onnx(tmp_path / "tiny.onnx")
    other = make_centre_deposit_onnx(tmp_path / "other.onnx")
    photos = sorted((ROOT / "datasets" / "samples").glob("*.jpg"))[:3]

    cost = measure_cost(model, photos, threads=1, rounds=2)
    assert (cost["photos"], cost["rounds"], cost["threads"]) == (3, 2, 1)
    assert 0 < cost["median_ms"] < 5000 and 0 < cost["median_cpu_ms"] < 5000

    times = time_models({"a": model, "b": other}, photos, rounds=1)
    assert set(times) == {"a", "b"}
    assert all(t["ms_per_photo"] > 0 and t["cpu_ms_per_photo"] >= 0 for t in times.values())


DATASET = {
    "images": {"train": 2871, "val": 670},
    "boxes": {"train": {"dumped_waste": 2588, "overflowing_bin": 2513, "bin": 3355}, "val": {"dumped_waste": 385}},
    "mappings": {"trash-bags-kr": {"general_trashbag": "dumped_waste"}},
    "specs": {"train": ["street-waste-cn:train:fit", "trash-bags-kr:train+val:fit"], "val": ["street-waste-cn:val"]},
}


def test_card_says_where_the_training_photos_came_from_and_what_was_held_out() -> None:
    text = render({**CARD, "dataset": DATASET})
    assert "| train | `street-waste-cn:train:fit`, `trash-bags-kr:train+val:fit` | 2871 | 2588 | 2513 | 3355 |" in text
    assert "| val | `street-waste-cn:val` | 670 | 385 | 0 | 0 |" in text
    assert "trash-bags-kr: `general_trashbag` -> `dumped_waste`" in text
    assert "split by shooting session" in text and "choose the verdict thresholds" in text
    joined = "bags that touch (within 0.25 of a bag's size, directly or through others) are joined into one box"
    assert joined not in text
    piled = render({**CARD, "dataset": {**DATASET, "piles": {"gap": 0.25, "sources": ["trash-bags-kr"]}}})
    assert f"trash-bags-kr boxes every bag; in the training photos, {joined} per pile" in piled


def test_card_has_the_thresholds_tiles_ablation_and_energy() -> None:
    untiled = {**EVALUATION, "image_level": {**EVALUATION["image_level"], "recall": 0.8846},
               "deposit_coverage": {"covered": 0.7468, "small_covered": 0.8571, "small_labels": 14},
               "ms_per_image": 40.9}
    tiled = {**EVALUATION, "image_level": {**EVALUATION["image_level"], "recall": 1.0},
             "deposit_coverage": {"covered": 0.8112, "small_covered": 0.9286, "small_labels": 14}, "ms_per_image": 52.0}
    card = {
        **CARD,
        "verdict_calibration": {"thresholds": {"dumped_waste": 0.42, "overflowing_bin": 0.8},
                                "tile_thresholds": {"dumped_waste": 0.57, "overflowing_bin": 0.95}, "recall": 0.9539,
                                "specificity": 0.9107, "target_recall": 0.95, "positives": 217, "negatives": 56,
                                "dataset": "runs/data/calib", "split": "val", "tiles_when_empty": True,
                                "rule": "highest specificity"},
        "tiles": [{"without": untiled, "with": tiled}],
        "ablation": {"budget": {"epochs": 4, "imgsz": 320, "train_photos": 465, "start": "weights/x.pt",
                                "optimizer": "AdamW", "seed": 0}, "holdout": "runs/data/kr-holdout",
                     "runs": [{"name": "photo", "augment": {"scale": 0.0, "photo_noise": 0.2, "paste": False},
                               "train_minutes": 3.21, "map50": 0.8, "ap50_dumped_waste": 0.7, "image_recall": 0.9,
                               "image_specificity": 0.85, "image_auc": 0.93, "holdout_image_recall": 0.96,
                               "holdout_covered": 0.8}]},
        "energy": {"command": "python -m benchmarks.bench_energy", "machine": "cpu x", "model": "m.onnx",
                   "method": "CPU-seconds x watts", "watts_per_core": 10.0,
                   "rows": [{"work": "12 MP phone upload", "unit": "1,000 photos", "cpu_seconds": 323.4, "wh": 0.9}]},
    }
    text = render(card)
    assert _unmeasured(text) == ["Evaluation", "Cost per photo on a CPU", "Comparisons at the same budget"]
    assert "| dumped_waste | 0.42 | 0.57 |" in text and "| overflowing_bin | 0.80 | 0.95 |" in text
    assert "217 with a deposit, 56 without" in text and "recall 0.954, specificity 0.911" in text
    assert "| runs/data/swcn/data.yaml (val) | off | 0.885 | 0.890 | 0.747 | 0.857 of 14 | 40.9 |" in text
    assert "| runs/data/swcn/data.yaml (val) | on | 1.000 | 0.890 | 0.811 | 0.929 of 14 | 52.0 |" in text
    assert "| photo | photo_noise 0.2 | 3.2 | 0.800 | 0.700 | 0.930 | 0.900 | 0.850 | 0.960 | 0.800 |" in text
    assert "| 12 MP phone upload | 1,000 photos | 323 | 0.90 |" in text and "10 W per busy core" in text


def test_card_names_the_checkpoints_an_averaged_model_comes_from() -> None:
    averaged = [{"path": "runs/train/b/weights/last.pt", "sha256": "d426b271f4c0" + "0" * 52, "weight": 0.5},
                {"path": "weights/vipare-yolo11n.pt", "sha256": "348b8fa526da" + "0" * 52, "weight": 0.5}]
    text = render({**CARD, "averaged_from": averaged})
    assert ("- weights: the element-wise average of 0.5 x `runs/train/b/weights/last.pt` (sha256 `d426b271f4c0`) "
            "and 0.5 x `weights/vipare-yolo11n.pt` (sha256 `348b8fa526da`) (`training.average`)") in text
    assert "element-wise average" not in render(CARD)


def test_a_fine_tuned_model_names_the_run_it_started_from() -> None:
    from training.model_card import _start_lines

    config = {"model": str(Path.cwd() / "runs/train/clean-480/weights/last.pt"),
              "optimizer": {"optimizer": "AdamW", "lr0": 2e-4, "warmup_epochs": 0.0}}
    (line,) = _start_lines(config)
    assert "`runs/train/clean-480/weights/last.pt` (optimizer AdamW, lr0 0.0002, warmup_epochs 0)" in line
    assert _start_lines({"model": "/somewhere/yolo11n-coco.pt", "optimizer": {}}) == []
