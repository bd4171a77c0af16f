"""Dataset -> fine-tune -> ONNX export, end to end on a handful of photos (slow, marked ``train``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from training.datasets import SOURCES, import_split, write_dataset  # noqa: E402
from training.export import export_model  # noqa: E402
from training.train import TrainConfig, fine_tune  # noqa: E402
from vipare.taxonomy import class_names  # noqa: E402

SOURCE = SOURCES["street-waste-cn"]
pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(not SOURCE.root.exists(), reason="shared dataset missing"),
]

TRAIN_PHOTOS = 16
VAL_PHOTOS = 8
TINY_IMGSZ = 64


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, _ = import_split(SOURCE, "train")
    val, _ = import_split(SOURCE, "val")
    out = tmp_path_factory.mktemp("data")
    return write_dataset(out, {"train": train[:TRAIN_PHOTOS], "val": val[:VAL_PHOTOS]}).data_yaml


def test_fine_tune_and_export(data_yaml: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=data_yaml,
        model=Path("yolo11n.yaml"),  # from scratch: the architecture ships with Ultralytics
        project=tmp_path / "runs",
        name="tiny",
        epochs=1,
        imgsz=TINY_IMGSZ,
        batch=VAL_PHOTOS,
        workers=1,
        cache="",
        device="cpu",
        photo_noise=1.0,
        noise_effects=("jpeg", "night"),
        save_period=1,
    )
    run_dir = fine_tune(config)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["data_hash"] and record["finished"] and record["software"]["ultralytics"]
    assert record["cpu_seconds"] > 0
    log = (run_dir / "train.log").read_text()
    assert "photo noise in the training pipeline: PhotoNoise(p=1.0, effects=('jpeg', 'night')" in log
    assert "Using 1 dataloader workers" in log  # kept on a CPU, where Ultralytics would use none
    assert f"training on {os.cpu_count()} CPU threads" in log  # where Ultralytics leaves a core to the loader
    assert (run_dir / "weights" / "best.pt").exists()
    assert (run_dir / "weights" / "epoch0.pt").exists()  # kept for averaging (training.average)

    out = tmp_path / "weights" / "model.onnx"
    # An untrained net's scores sit near zero, so parity is checked with the shipping tolerances.
    result = export_model(run_dir, out, parity_images=2, val_batch=VAL_PHOTOS, holdout_data=data_yaml)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert {"names", "imgsz", "stride", "task", "version"} <= props.keys()
    assert props["imgsz"] == f"[{TINY_IMGSZ}, {TINY_IMGSZ}]"
    assert json.loads(props["vipare_class_names"]) == class_names()
    assert props["vipare_data_hash"] == record["data_hash"]
    assert "mAP50" in json.loads(props["vipare_metrics"])
    card = json.loads(result.card_path.read_text())
    assert card["epochs_done"] == 1 and card["imgsz"] == TINY_IMGSZ
    assert card["dataset"]["images"] == {"train": TRAIN_PHOTOS, "val": VAL_PHOTOS}
    assert card["datasets"][0].startswith("street-waste-cn: Roboflow Universe")
    # The held-out figures are those of vipare evaluate on the exported file.
    holdout = card["holdout"]
    assert holdout["images"] == VAL_PHOTOS and holdout["data_yaml"] == str(data_yaml)
    assert {"map50", "per_class", "image_level"} <= holdout.keys()


def test_compare_trains_exports_evaluates_and_times_each_variant(data_yaml: Path, tmp_path: Path) -> None:
    from training.compare import Variant, compare

    variants = [Variant("tiny-64", "scratch", TINY_IMGSZ), Variant("tiny-96", "scratch", 96)]
    out = tmp_path / "compare"
    path = compare(data_yaml, out, variants=variants, epochs=1, fraction=1.0, batch=VAL_PHOTOS, workers=0,
                   device="cpu", rounds=1)
    result = json.loads(path.read_text())
    assert [r["name"] for r in result["runs"]] == ["tiny-64", "tiny-96"]
    assert result["budget"]["train_photos"] == TRAIN_PHOTOS
    for row in result["runs"]:
        assert row["epochs"] == 1 and row["eval_images"] == VAL_PHOTOS
        assert 0.0 <= row["map50"] <= 1.0
        assert row["ms_per_photo"] > 0 and row["cpu_ms_per_photo"] > 0
    assert json.loads((out / "tiny-96.eval.json").read_text())["input_size"] == [96, 96]

    # A second call finds every run trained, exported and evaluated, and only re-times them.
    made = [p for p in out.rglob("*") if p.suffix in {".pt", ".onnx"} or p.name.endswith(".eval.json")]
    stamps = {p: p.stat().st_mtime for p in made}
    compare(data_yaml, out, variants=variants, epochs=1, fraction=1.0, batch=VAL_PHOTOS, workers=0, device="cpu",
            rounds=1)
    assert {p: p.stat().st_mtime for p in stamps} == stamps
