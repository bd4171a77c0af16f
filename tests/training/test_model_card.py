"""The model card is rendered from the JSON twin: figures in, the same figures out."""

from __future__ import annotations

from training.model_card import render

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


def test_card_says_what_is_not_measured() -> None:
    text = render(CARD)
    assert text.count("Not measured yet") == 3
