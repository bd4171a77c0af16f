"""Export a fine-tuned checkpoint to the ONNX model vipare ships, with its model facts.

Steps:

1. validate the checkpoint on the run's validation split (:func:`training.validate.ultralytics_val`);
2. export with Ultralytics' exporter (static shape, simplified, opset ``opset``, size as trained);
3. check the ONNX model against the PyTorch model on real photos (raw outputs, onnxruntime);
4. add vipare's metadata next to Ultralytics' own keys (``names``, ``imgsz``, ``stride``, ``task``,
   ``version``...): ``vipare_taxonomy_version``, ``vipare_data_hash``, ``vipare_metrics`` (JSON) and
   ``vipare_class_names`` (JSON list, so readers never need to parse Ultralytics' Python-literal
   ``names``);
5. write ``weights/vipare-yolo11n.onnx`` and its JSON twin ``weights/vipare-yolo11n.json``.

Run::

    python -m training.export runs/train/swcn-320 --holdout runs/data/kr-test/data.yaml
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from training.average import AVERAGE_KEY
from training.validate import split_images, ultralytics_val
from vipare.taxonomy import TAXONOMY_VERSION

__all__ = ["ExportResult", "check_onnx_parity", "export_model", "vipare_metadata"]

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("weights/vipare-yolo11n.onnx")
DEFAULT_OPSET = 17
MAX_MODEL_BYTES = 12 * 1024 * 1024
RUN_RECORD = "run.json"
BOX_ROWS = 4  # raw output rows 0..3 are xywh in pixels, the rest are class scores
SOURCE_CREDITS = {
    "street-waste-cn": "street-waste-cn: Roboflow Universe project-shb1t/-111-ehcfr v2, CC BY 4.0 "
    "(via GitHub ATANU0023/garbage_detection_dataset @ 1e9fc5508825)",
    "trash-bags-kr": "trash-bags-kr: Roboflow Universe woosongvision/trashbags-segmentation-v1-v2 v1, CC BY 4.0 "
    "(via GitHub itsCaveMan/WoosongVision @ 33a6b888361c)",
    "paste": "paste: trash-bags-kr bags cut along their polygons and pasted beside the bins of street-waste-cn "
    "training photos (training.copy_paste), both CC BY 4.0 as above",
}
DATASET_CREDITS = (SOURCE_CREDITS["street-waste-cn"],)
BASE_MODEL = "Ultralytics YOLO11n COCO (AGPL-3.0), rebuilt from its INT8 OpenVINO IR by training.pretrained"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        onnx_path: the model file.
        card_path: its JSON twin.
        max_score_diff: largest |ONNX - PyTorch| class score on the parity photos.
        max_box_diff: largest |ONNX - PyTorch| box coordinate (pixels) on the parity photos.
    """

    onnx_path: Path
    card_path: Path
    max_score_diff: float
    max_box_diff: float


def check_onnx_parity(onnx_path: Path, weights: Path, images: Sequence[Path], imgsz: int) -> tuple[float, float]:
    """Run ONNX (onnxruntime) and PyTorch on ``images`` and compare raw outputs.

    Args:
        onnx_path: exported model, static input (1, 3, imgsz, imgsz).
        weights: the checkpoint it was exported from.
        images: photos.
        imgsz: input size.

    Returns:
        (largest class-score difference, largest box-coordinate difference in pixels).
    """
    import onnxruntime as ort
    import torch

    from training.images import letterbox_tensor
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import load_checkpoint

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    model, _ = load_checkpoint(weights)
    model.eval()
    score_diff, box_diff = 0.0, 0.0
    for path in images:
        tensor = letterbox_tensor([path], imgsz)
        onnx_out = session.run(None, {input_name: tensor.numpy()})[0]
        with torch.no_grad():
            torch_out = model(tensor)[0].numpy()
        diff = np.abs(onnx_out - torch_out)
        box_diff = max(box_diff, float(diff[:, :BOX_ROWS].max()))
        score_diff = max(score_diff, float(diff[:, BOX_ROWS:].max()))
    return score_diff, box_diff


def vipare_metadata(data_hash: str | None, metrics: dict[str, Any], class_names: Sequence[str]) -> dict[str, str]:
    """The metadata keys vipare adds to Ultralytics' own."""
    return {
        "vipare_taxonomy_version": TAXONOMY_VERSION,
        "vipare_data_hash": data_hash or "",
        "vipare_metrics": json.dumps(metrics, sort_keys=True),
        "vipare_class_names": json.dumps(list(class_names)),
    }


def _add_metadata(onnx_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """Add ``extra`` to the model's metadata (replacing same-named keys); return all metadata."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(extra)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(onnx_path))
    return props


def _train_seconds(rows: Sequence[dict[str, str]]) -> float | None:
    """Total training seconds; Ultralytics' cumulative ``time`` column restarts at each resume."""
    times = [float(r["time"]) for r in rows if r.get("time")]
    if not times:
        return None
    ends = [t for t, after in zip(times, times[1:], strict=False) if after < t]
    return round(sum(ends) + times[-1], 1)


def _training_facts(run_dir: Path) -> dict[str, Any]:
    """Epochs done and training seconds from Ultralytics' ``results.csv``; the run record."""
    record = json.loads((run_dir / RUN_RECORD).read_text()) if (run_dir / RUN_RECORD).exists() else {}
    rows: list[dict[str, str]] = []
    results = run_dir / "results.csv"
    if results.exists():
        with results.open() as fh:
            rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    last = rows[-1] if rows else {}
    return {
        "epochs_done": int(float(last["epoch"])) if "epoch" in last else 0,
        "train_seconds": _train_seconds(rows),
        "last_epoch_val": {k: float(v) for k, v in last.items() if k.startswith("metrics/")},
        "run": record,
        "dataset": _dataset_record(record),
    }


def _dataset_record(run: dict[str, Any]) -> dict[str, Any]:
    """The run's ``dataset.json`` (counts, sources, mappings, specs) without its machine paths."""
    data = Path(str((run.get("config") or {}).get("data") or ""))
    path = data.parent / "dataset.json"
    if not data.name or not path.exists():
        return {}
    record = json.loads(path.read_text())
    record["sources"] = dict.fromkeys(record.get("sources") or {}, "")
    return record


def dataset_credits(dataset: dict[str, Any]) -> list[str]:
    """Credits of the sources a run's dataset was imported from (street-waste-cn when unknown)."""
    names = list((dataset.get("sources") or {}).keys()) or ["street-waste-cn"]
    return [SOURCE_CREDITS.get(n, f"{n}: a folder in the taxonomy") for n in names]


def base_model(config: dict[str, Any]) -> str:
    """Where a run's weights started: the imported COCO model, or a vipare model trained from it."""
    start = Path(str(config.get("model") or ""))
    if start.name.startswith("vipare-"):
        return f"{start.name} (the model shipped before, itself fine-tuned from {BASE_MODEL})"
    return BASE_MODEL


def _holdout(onnx_path: Path, data_yaml: Path | None) -> dict[str, Any] | None:
    """Metrics of the shipped ONNX model on a held-out dataset, through the vipare detector, or None."""
    if data_yaml is None:
        return None
    from training.evaluate import evaluate

    return {**evaluate(onnx_path, data_yaml).as_dict(), "data_yaml": str(data_yaml)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_model(
    run_dir: Path,
    out: Path = DEFAULT_OUT,
    weights_name: str = "best.pt",
    opset: int = DEFAULT_OPSET,
    parity_images: int = 8,
    val_batch: int = 16,
    max_score_diff: float = 1e-3,
    max_box_diff: float = 0.05,
    max_bytes: int = MAX_MODEL_BYTES,
    holdout_data: Path | None = None,
) -> ExportResult:
    """Validate, export, check and stamp a run's checkpoint.

    Args:
        run_dir: a run directory of :mod:`training.train`.
        out: ONNX path to write; the JSON twin gets the same stem.
        weights_name: checkpoint inside ``run_dir/weights`` (``best.pt``; ``last.pt`` mid-run).
        opset: ONNX opset.
        parity_images: how many validation photos the ONNX/PyTorch check uses.
        val_batch: batch size of the validation pass.
        max_score_diff: largest allowed class-score difference between ONNX and PyTorch.
        max_box_diff: largest allowed box difference (pixels of the network input).
        max_bytes: largest allowed model file.
        holdout_data: a validation-only ``data.yaml`` (e.g. trash-bags-kr) the exported ONNX model is
            also evaluated on; its metrics go to the JSON twin under ``holdout``.

    Returns:
        The written files and the parity numbers.

    Raises:
        ValueError: when parity or the size limit fails (nothing is written to ``out`` then).
    """
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    weights = run_dir / "weights" / weights_name
    args = yaml.safe_load((run_dir / "args.yaml").read_text())
    imgsz = int(args["imgsz"])
    data_yaml = Path(args["data"])
    facts = _training_facts(run_dir)
    metrics = ultralytics_val(weights, data_yaml, imgsz, val_batch)
    log.info("val metrics %s", metrics)
    exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, opset=opset, simplify=True, dynamic=False))
    score_diff, box_diff = check_onnx_parity(exported, weights, split_images(data_yaml, count=parity_images), imgsz)
    log.info("ONNX vs PyTorch: max |dscore| %.2e, max |dbox| %.2e px", score_diff, box_diff)
    if score_diff > max_score_diff or box_diff > max_box_diff:
        raise ValueError(f"ONNX parity failed: |dscore| {score_diff:.3g}, |dbox| {box_diff:.3g}")
    if exported.stat().st_size > max_bytes:
        raise ValueError(f"{exported} is {exported.stat().st_size} bytes, over {max_bytes}")
    names = [str(n) for _, n in sorted(YOLO(str(weights)).names.items())]
    data_hash = facts["run"].get("data_hash")
    metadata = _add_metadata(exported, vipare_metadata(data_hash, metrics, names))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, out)
    card = {
        "model": out.name,
        "sha256": _sha256(out),
        "bytes": out.stat().st_size,
        "exported": dt.datetime.now(dt.UTC).isoformat(),
        "source_checkpoint": str(weights),
        "averaged_from": _averaged_from(weights),
        "base_model": base_model(facts["run"].get("config") or {}),
        "datasets": dataset_credits(facts["dataset"]),
        "dataset": facts["dataset"],
        "class_names": names,
        "taxonomy_version": TAXONOMY_VERSION,
        "data_hash": data_hash,
        "imgsz": imgsz,
        "opset": opset,
        "epochs_done": facts["epochs_done"],
        "train_seconds": facts["train_seconds"],
        "train_config": facts["run"].get("config"),
        "device": facts["run"].get("device"),
        "software": facts["run"].get("software"),
        "started": facts["run"].get("started"),
        "finished": facts["run"].get("finished"),
        "metrics": metrics,
        "onnx_parity": {"max_score_diff": score_diff, "max_box_diff_px": box_diff, "images": parity_images},
        "holdout": _holdout(out, holdout_data),
        "onnx_metadata": {k: v for k, v in metadata.items() if not k.startswith("vipare_metrics")},
    }
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return ExportResult(out, card_path, score_diff, box_diff)


def _averaged_from(weights: Path) -> list[dict[str, Any]] | None:
    """The checkpoints ``weights`` is the average of (:mod:`training.average`), or None for a run's own."""
    import torch

    return torch.load(weights, map_location="cpu", weights_only=False).get(AVERAGE_KEY)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--weights", default="best.pt", show_default=True, help="Checkpoint name in RUN_DIR/weights.")
@click.option("--opset", type=click.IntRange(1), default=DEFAULT_OPSET, show_default=True)
@click.option("--parity-images", type=click.IntRange(1), default=8, show_default=True,
              help="Validation photos on which the ONNX model must match the checkpoint.")
@click.option("--holdout", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Validation-only data.yaml to evaluate the ONNX model on.")
def main(run_dir: Path, out: Path, weights: str, opset: int, parity_images: int, holdout: Path | None) -> None:
    """Export the fine-tuned run RUN_DIR to vipare's ONNX model and its JSON twin."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = export_model(run_dir, out, weights, opset, parity_images, holdout_data=holdout)
    click.echo(
        json.dumps(
            {
                "onnx": str(result.onnx_path),
                "card": str(result.card_path),
                "max_score_diff": result.max_score_diff,
                "max_box_diff_px": result.max_box_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
