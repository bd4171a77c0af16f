"""training.adapt: the promotion rule (fast), the card's adaptation section (fast), refusals of an
unusable export (fast), and a whole adaptation on a tiny reviews dataset (slow, marked ``train``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from training.adapt import EXIT_REFUSED, AdaptConfig, AdaptError, adapt, decide, main
from training.datasets import SOURCES, Sample, import_split
from training.model_card import render
from vipare.taxonomy import class_names, is_deposit

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ONNX = ROOT / "weights" / "vipare-yolo11n.onnx"
SHIPPED_PT = ROOT / "weights" / "vipare-yolo11n.pt"
REFERENCE = SOURCES["street-waste-cn"]


def _metrics(recall: float | None, specificity: float | None, map50: float | None) -> dict[str, Any]:
    return {"map50": map50, "image_level": {"recall": recall, "specificity": specificity, "auc": None}}


@pytest.mark.parametrize(
    ("city", "reference", "failed"),
    [
        # (old, new) recall, specificity; (old, new) reference mAP50
        (((0.8, 0.9), (0.7, 0.7)), (0.90, 0.90), []),
        (((0.8, 0.7), (0.7, 0.9)), (0.90, 0.90), ["recall"]),
        (((0.8, 0.8), (0.7, 0.6)), (0.90, 0.90), ["specificity"]),
        (((0.8, 0.7), (0.7, 0.6)), (0.90, 0.90), ["recall", "specificity"]),
        (((0.8, 0.8), (0.7, 0.7)), (0.90, 0.89), []),  # exactly the 0.01 allowed
        (((0.8, 0.8), (0.7, 0.7)), (0.90, 0.8899), ["mAP50"]),
        (((0.8, 0.8), (None, None)), (0.90, 0.95), []),  # no negative among the held-out photos
        (((None, None), (0.7, 0.7)), (None, None), []),  # nothing measurable passes
    ],
)
def test_decide(city: tuple, reference: tuple[float | None, float | None], failed: list[str]) -> None:
    (old_recall, new_recall), (old_spec, new_spec) = city
    decision = decide(
        _metrics(old_recall, old_spec, 0.5), _metrics(new_recall, new_spec, 0.1),  # city mAP50 does not count
        _metrics(None, None, reference[0]), _metrics(None, None, reference[1]),
    )
    names = [next(k for k in ("recall", "specificity", "mAP50") if k in c.name) for c in decision.failures]
    assert names == failed
    assert decision.promotable is (not failed)
    for check in decision.failures:
        assert "fell from" in check.detail or "a loss of" in check.detail


def test_decide_says_which_check_failed() -> None:
    decision = decide(_metrics(0.9, 0.8, None), _metrics(0.85, 0.8, None),
                      _metrics(None, None, 0.9), _metrics(None, None, 0.9))
    assert [c.detail for c in decision.failures] == [
        "image-level recall on the city's held-out photos fell from 0.900 to 0.850"
    ]


def _evaluation(dataset: str, split: str, recall: float, specificity: float, auc: float, map50: float) -> dict:
    return {"dataset": dataset, "split": split, "images": 4, "map50": map50,
            "image_level": {"recall": recall, "specificity": specificity, "auc": auc}}


def test_card_shows_the_adaptation() -> None:
    city = {"old": _evaluation("reviews", "test", 0.5, 1.0, 0.75, 0.4),
            "new": _evaluation("reviews", "test", 1.0, 0.5, 0.8, 0.6)}
    reference = {"old": _evaluation("swcn", "val", 0.9, 0.9, 0.95, 0.9),
                 "new": _evaluation("swcn", "val", 0.9, 0.9, 0.95, 0.88)}
    decision = decide(city["old"], city["new"], reference["old"], reference["new"])
    card = {
        "model": "m.onnx", "bytes": 1_000_000, "sha256": "ab" * 32, "imgsz": 320, "opset": 17,
        "class_names": class_names(), "taxonomy_version": "1", "base_model": "b", "datasets": [],
        "adaptation": {
            "reviews": "runs/reviews", "reviews_hash": "r" * 64, "held_out_split": "test", "data_hash": "d" * 64,
            "replay": {"source": "street-waste-cn:train", "photos": 4, "seed": 0},
            "counts": {"city_photos": {"train": 6, "val": 2, "test": 4}, "city_negatives": 3,
                       "train_images": {"train": 10, "val": 2},
                       "train_boxes": {"train": {"dumped_waste": 7, "overflowing_bin": 1, "bin": 2}}},
            "base_checkpoint": {"file": "vipare-yolo11n.pt"}, "old_model": {"file": "old.onnx", "sha256": "c" * 64},
            "imgsz": 320, "wall_seconds": 90.0, "cpu_seconds": 150.0,
            "evaluations": {"city": city, "reference": reference}, "decision": decision.as_dict(),
        },
    }
    text = render(card)
    assert "## Adaptation to the city's reviewed photos" in text
    assert "train 6, val 2, test 4 photos, 3 of them false alarms without any box" in text
    assert "Training set hash `" + "d" * 64 + "`: 10 training photos (7 dumped_waste" in text
    row = "| city held-out: reviews (test) | 4 | 0.500 / 1.000 | 1.000 / 0.500 | 0.750 / 0.800 | 0.400 / 0.600 |"
    assert row in text
    assert "1.5 min wall, 2.5 min CPU" in text
    assert "Decision: **not promotable**." in text
    assert "- FAILED: image-level specificity on the city's held-out photos fell from 1.000 to 0.500" in text
    assert "- FAILED: mAP50 on street-waste-cn val" in text


def _write_reviews(root: Path, splits: dict[str, list[Sample]]) -> Path:
    """An export as ``vipare dataset export`` writes it, from already-labelled photos."""
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, sample in enumerate(samples):
            name = f"report-{split}-{i}"
            shutil.copyfile(sample.image, root / "images" / split / f"{name}.jpg")
            (root / "labels" / split / f"{name}.txt").write_text("".join(f"{b.line()}\n" for b in sample.boxes))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(class_names()))}
    if "test" in splits:
        data["test"] = "images/test"
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    negatives = sum(not s.boxes for v in splits.values() for s in v)
    manifest = {"dataset_hash": "f" * 64, "negatives": negatives, "labels": {"review": 10}, "images": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def street_photos() -> tuple[list[Sample], list[Sample]]:
    """Shared validation photos with a deposit, and without one (never trained on by the shipped model)."""
    if not REFERENCE.root.exists():
        pytest.skip("shared datasets missing")
    samples, _ = import_split(REFERENCE, "val")
    names = class_names()
    deposit = [s for s in samples if any(is_deposit(names[b.cls]) for b in s.boxes)]
    clean = [s for s in samples if not any(is_deposit(names[b.cls]) for b in s.boxes)]
    return deposit, clean


@pytest.mark.parametrize(("splits", "message"), [({"val": 2}, "no training photos"),
                                                 ({"train": 2}, "no val or test photos")])
def test_unusable_exports_are_refused(tmp_path: Path, street_photos: tuple[list[Sample], list[Sample]],
                                      splits: dict[str, int], message: str) -> None:
    deposit, _ = street_photos
    reviews = _write_reviews(tmp_path / "reviews", {s: deposit[:n] for s, n in splits.items()})
    with pytest.raises(AdaptError, match=message):
        adapt(AdaptConfig(reviews=reviews, output=tmp_path / "out", replay=0))


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_PT.exists(), reason="weights/vipare-yolo11n.pt not built")
def test_adapt_end_to_end(tmp_path: Path, street_photos: tuple[list[Sample], list[Sample]]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from vipare.detection import Detector
    from vipare.settings import Settings

    deposit, clean = street_photos
    # A tiny city: photos far from the start of the split (the reference evaluation reads the first ones).
    deposit, clean = deposit[-8:], clean[-4:]
    reviews = _write_reviews(tmp_path / "reviews", {
        "train": deposit[:4] + clean[:1],
        "val": deposit[4:6] + clean[1:2],
        "test": deposit[6:8] + clean[2:4],
    })
    (reviews / "images" / "train" / "report-iphone.heic").write_bytes(b"not read by the training tools")
    out = tmp_path / "adapt"
    args = ["--reviews", str(reviews), "--output", str(out), "--replay", "3", "--epochs", "1", "--batch", "4",
            "--workers", "0", "--device", "cpu", "--reference-images", "8"]
    result = CliRunner().invoke(main, args)
    print(result.output)
    assert result.exit_code in (0, EXIT_REFUSED), result.output
    assert "s wall" in result.output and "s CPU" in result.output
    assert "city held-out photos (test, 4 photos)" in result.output

    onnx_path = out / "vipare-yolo11n-adapted.onnx"
    settings = Settings()
    detector = Detector(onnx_path, conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
                        max_detections=settings.max_detections, intra_op_threads=settings.intra_op_threads)
    shipped = Detector(settings.model_path, conf_threshold=0.25, iou_threshold=0.45, max_detections=10,
                       intra_op_threads=1)
    assert list(detector.names) == class_names() and detector.input_size == shipped.input_size  # adapted at its size
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    adaptation = card["adaptation"]
    assert adaptation["decision"]["promotable"] is (result.exit_code == 0)
    assert adaptation["counts"]["city_photos"] == {"train": 5, "val": 3, "test": 4}
    assert adaptation["counts"]["city_photos_left_out"] == {"train": 1}
    assert adaptation["counts"]["train_images"] == {"train": 8, "val": 3}
    assert adaptation["reviews_hash"] == "f" * 64 and adaptation["held_out_split"] == "test"
    city = adaptation["evaluations"]["city"]
    assert city["old"]["image_level"]["positives"] == 2 and city["old"]["image_level"]["negatives"] == 2
    assert adaptation["evaluations"]["reference"]["new"]["images"] == 8
    text = (out / "MODEL_CARD.md").read_text()
    assert "## Adaptation to the city's reviewed photos" in text
    assert "1 left out, in a format training does not read" in text
    if result.exit_code == 0:
        assert f"promotable: {onnx_path}" in result.output and f"card: {out / 'MODEL_CARD.md'}" in result.output
    else:
        assert "not promotable: " in result.output

    # Run again: the finished run is found, not trained again.
    last = out / "train" / "weights" / "last.pt"
    stamp = last.stat().st_mtime
    again = CliRunner().invoke(main, args)
    assert again.exit_code == result.exit_code, again.output
    assert last.stat().st_mtime == stamp


@pytest.mark.parametrize(
    ("record", "last_pt", "expected"),
    [
        (None, False, "fresh"),
        ({"data_hash": "h"}, False, "fresh"),  # stopped before the first checkpoint
        ({"data_hash": "h"}, True, "resume"),
        ({"data_hash": "h", "finished": "2026-12-02T18:00:00"}, True, "skip"),
    ],
)
def test_an_interrupted_run_resumes_and_a_finished_one_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: dict | None, last_pt: bool, expected: str
) -> None:
    import training.train
    from training.adapt import _train

    calls: list[str] = []

    def fake_fine_tune(config: training.train.TrainConfig, resume: bool = False) -> Path:
        calls.append("resume" if resume else "fresh")
        assert config.optimizer["warmup_epochs"] == 0.0 and not config.val
        return config.run_dir

    monkeypatch.setattr(training.train, "fine_tune", fake_fine_tune)
    run_dir = tmp_path / "train"
    if record is not None:
        (run_dir / "weights").mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps(record))
        if last_pt:
            (run_dir / "weights" / "last.pt").write_bytes(b"")
    config = AdaptConfig(reviews=tmp_path)
    assert _train(config, tmp_path / "data.yaml", "h", tmp_path, 320) == run_dir.resolve()
    assert calls == ([] if expected == "skip" else [expected])


def test_a_run_on_other_photos_is_not_resumed(tmp_path: Path) -> None:
    from training.adapt import _train

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "run.json").write_text(json.dumps({"data_hash": "other"}))
    with pytest.raises(AdaptError, match="other photos"):
        _train(AdaptConfig(reviews=tmp_path), tmp_path / "data.yaml", "h", tmp_path, 320)
