"""Write ``weights/MODEL_CARD.md`` from the model's JSON twin, adding measured evaluations and cost.

Every figure in the card comes from a file this command reads or a measurement it makes:

    python -m training.model_card weights/vipare-yolo11n.json \\
        --evaluation runs/eval/swcn-val.json --evaluation runs/eval/kr.json --measure-cost

``--evaluation`` takes JSON written by ``vipare evaluate ... --output``; ``--measure-cost`` times
the shipped pipeline on phone-like 12 MP JPEGs and on dataset photos on this machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from training import card_sections as sections
from vipare.machine import machine

__all__ = ["measure_cost", "render", "main"]

ROOT = Path(__file__).resolve().parent.parent


def measure_cost(model: Path, photos: Sequence[Path], *, threads: int = 0, rounds: int = 2) -> dict[str, Any]:
    """Wall-clock and CPU time per photo of ``Pipeline.analyze`` (decode to result) on ``photos``.

    CPU time is the process's user + system time, so it counts every onnxruntime thread.
    """
    from training.compare import time_models

    times = time_models({"model": model}, photos, rounds, threads=threads)["model"]
    return {
        "photos": len(photos),
        "rounds": rounds,
        "threads": threads or "all",
        "median_ms": times["ms_per_photo"],
        "median_cpu_ms": times["cpu_ms_per_photo"],
        "machine": machine(),
    }


def _thresholds(level: dict[str, Any]) -> str:
    """``threshold 0.35`` (older records) or ``thresholds dumped_waste 0.30, overflowing_bin 0.55``."""
    if "verdict_thresholds" in level:
        return "thresholds " + ", ".join(f"{k} {v:.2f}" for k, v in level["verdict_thresholds"].items())
    return f"threshold {level['verdict_threshold']}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _unmerged(ev: dict[str, Any]) -> str:
    """Why Ultralytics' mAP may differ: it keeps the boxes as drawn, where the evaluation merged them."""
    return ", boxes as drawn, not merged" if ev.get("box_merge_iou", 1.0) < 1.0 else ""


def _evaluation_section(ev: dict[str, Any]) -> list[str]:
    level = ev["image_level"]
    lines = [
        f"### {ev['dataset']} ({ev['split']}): {ev['images']} photos, {ev['labels']} labelled boxes",
        "",
        f"- mAP50 {_fmt(ev['map50'])}, mAP50-95 {_fmt(ev['map50_95'])}"
        + (f" (Ultralytics' validator on the same ONNX file{_unmerged(ev)}: mAP50 {_fmt(ev['ultralytics_map50'])})"
           if "ultralytics_map50" in ev else ""),
        f"- at the shipped thresholds (score > {ev['conf_threshold']}, NMS IoU {ev['iou_threshold']}"
        + (f", boxes merged above IoU {ev['box_merge_iou']}" if ev.get("box_merge_iou", 1.0) < 1.0 else "")
        + "): "
        f"precision {_fmt(ev['precision'])}, recall {_fmt(ev['recall'])}",
        "",
        "| class | labels | AP50 | AP50-95 | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in ev["per_class"].items():
        lines.append(f"| {name} | {c['labels']} | {_fmt(c['ap50'])} | {_fmt(c['ap50_95'])} | "
                     f"{_fmt(c['precision'])} | {_fmt(c['recall'])} |")
    lines += [
        "",
        f"Image level, \"dumping present\" ({level['rule']}, {_thresholds(level)}; "
        f"deposit classes {', '.join(level['deposit_classes'])}): "
        f"{level['positives']} photos with a deposit, {level['negatives']} without; "
        f"recall {_fmt(level['recall'])}, specificity {_fmt(level['specificity'])}, "
        + (f"AUC {_fmt(level['auc'])}, " if "auc" in level else "")
        + f"accuracy {_fmt(level['accuracy'])} "
        f"(tp {level['tp']}, fp {level['fp']}, tn {level['tn']}, fn {level['fn']}).",
        "",
    ]
    return lines


def _adaptation_section(card: dict[str, Any]) -> list[str]:
    """Old against new on the city's held-out photos and on the reference set, and the decision."""
    ad = card.get("adaptation")
    if not ad:
        return []
    counts, replay, decision = ad["counts"], ad["replay"], ad["decision"]
    city = counts["city_photos"]
    lines = [
        "## Adaptation to the city's reviewed photos",
        "",
        f"Written by `python -m training.adapt`: fine-tuned from `{ad['base_checkpoint']['file']}` "
        f"(the checkpoint of `{ad['old_model']['file']}`, sha256 `{ad['old_model']['sha256']}`) at {ad['imgsz']} px "
        f"on the city's reviewed photos (`{ad['reviews']}`, export hash `{ad['reviews_hash']}`: "
        f"train {city['train']}, val {city['val']}, test {city['test']} photos"
        + (f", {counts['city_negatives']} of them false alarms without any box"
           if counts.get("city_negatives") is not None else "")
        + (f"; {sum(counts['city_photos_left_out'].values())} left out, in a format training does not read"
           if counts.get("city_photos_left_out") else "")
        + f") and {replay['photos']} {replay['source']} photos replayed (seed {replay['seed']}).",
        f"Training set hash `{ad['data_hash']}`: {counts['train_images'].get('train', 0)} training photos "
        f"({', '.join(f'{k} {n}' for n, k in counts['train_boxes'].get('train', {}).items())} boxes), "
        f"{counts['train_images'].get('val', 0)} validation photos. "
        f"The adaptation took {ad['wall_seconds'] / 60:.1f} min wall, {ad['cpu_seconds'] / 60:.1f} min CPU.",
        "",
        "| data | photos | image recall old / new | specificity old / new | AUC old / new | mAP50 old / new |",
        "|---|---|---|---|---|---|",
    ]
    for label, pair in (("city held-out", ad["evaluations"]["city"]), ("reference", ad["evaluations"]["reference"])):
        old, new = pair["old"], pair["new"]
        o, n = old["image_level"], new["image_level"]
        figures = [(o["recall"], n["recall"]), (o["specificity"], n["specificity"]),
                   (o.get("auc"), n.get("auc")), (old["map50"], new["map50"])]
        lines.append(f"| {label}: {new['dataset']} ({new['split']}) | {new['images']} | "
                     + " | ".join(f"{_fmt(a)} / {_fmt(b)}" for a, b in figures) + " |")
    verdict = "promotable" if decision["promotable"] else "**not promotable**"
    lines += ["", f"Decision: {verdict}.", ""]
    lines += [f"- {'passed' if c['passed'] else 'FAILED'}: {c['detail']}" for c in decision["checks"]]
    lines.append("")
    return lines


def _same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["dataset"] == b["dataset"] and a["split"] == b["split"])


def _int8_section(card: dict[str, Any]) -> list[str]:
    int8 = card.get("int8")
    if not int8:
        return []
    q = int8["quantization"]
    lines = [
        "## INT8 copy, for CPUs where time is short",
        "",
        f"`{int8['model']}`, {int8['bytes'] / 1e6:.1f} MB, sha256 `{int8['sha256']}`: made from this model by",
        f"`python -m training.quantize` ({q['format']}; calibrated on {q['calibration_photos']} training photos;",
        f"{q['float_nodes']} nodes kept in float: the first convolution, the attention block, the head's",
        "activations and box decoder).",
        "Not the default: give it with `--model` or `VIPARE_MODEL_PATH` where its cost matters more than the",
        "accuracy it gives up below.",
        "",
        "| data | photos | mAP50 float / int8 | AP50 dumped_waste float / int8 | image recall float / int8 | "
        "image specificity float / int8 |",
        "|---|---|---|---|---|---|",
    ]
    for ev in int8.get("evaluations") or []:
        ref = next((e for e in card.get("evaluations") or [] if _same_data(e, ev)), None)
        if ref is None:
            continue
        pairs = [
            (ref["map50"], ev["map50"]),
            (ref["per_class"]["dumped_waste"]["ap50"], ev["per_class"]["dumped_waste"]["ap50"]),
            (ref["image_level"]["recall"], ev["image_level"]["recall"]),
            (ref["image_level"]["specificity"], ev["image_level"]["specificity"]),
        ]
        lines.append(f"| {ev['dataset']} ({ev['split']}) | {ev['images']} | "
                     + " | ".join(f"{_fmt(a)} / {_fmt(b)}" for a, b in pairs) + " |")
    cost = int8.get("cost") or {}
    if cost:
        lines += ["", "| photos | ms float / int8 | CPU ms float / int8 | int8 speed-up (wall) | threads | machine |",
                  "|---|---|---|---|---|---|"]
        for name, c in cost.items():
            f, i = c["float"], c["int8"]
            lines.append(f"| {name} ({c['photos']} x {c['rounds']}, models in turn) | {f['ms_per_photo']} / "
                         f"{i['ms_per_photo']} | {f['cpu_ms_per_photo']} / {i['cpu_ms_per_photo']} | "
                         f"{f['ms_per_photo'] / i['ms_per_photo']:.2f}x | all | {c['machine']} |")
    lines.append("")
    return lines


def _averaged_lines(card: dict[str, Any]) -> list[str]:
    averaged = card.get("averaged_from")
    if not averaged:
        return []
    parts = [f"{a['weight']:g} x `{a['path']}` (sha256 `{a['sha256'][:12]}`)" for a in averaged]
    return [f"- weights: the element-wise average of {' and '.join(parts)} (`training.average`)"]


def _start_lines(config: dict[str, Any]) -> list[str]:
    """Where a run fine-tuned from a trained model (``training.train --fine-tune``) started, and how."""
    optimizer = config.get("optimizer") or {}
    if not optimizer or not config.get("model"):
        return []
    start = Path(config["model"])
    if start.is_absolute() and start.is_relative_to(Path.cwd()):
        start = start.relative_to(Path.cwd())
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in optimizer.items())
    return [f"- fine-tuned from `{start}` ({settings}); the energy table counts every run of the lineage"]


def render(card: dict[str, Any]) -> str:
    """The Markdown model card for a JSON twin (with ``evaluations``, ``cost`` and ``comparisons`` when measured)."""
    config = card.get("train_config") or {}
    hours = (card.get("train_seconds") or 0) / 3600
    lines = [
        f"# Model card: {card['model']}",
        "",
        "Generated by `python -m training.model_card` from `weights/vipare-yolo11n.json`; every figure below",
        "comes from that file, which the training, export, evaluation and cost commands wrote.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{card['model']}`, {card['bytes'] / 1e6:.1f} MB, sha256 `{card['sha256']}` |",
        "| architecture | YOLO11n detector (2.6 M parameters), ONNX opset "
        f"{card.get('opset')}, input {card['imgsz']}x{card['imgsz']} RGB |",
        f"| classes | {', '.join(f'`{n}`' for n in card['class_names'])} (taxonomy v{card['taxonomy_version']}) |",
        f"| starting point | {card['base_model']} |",
        "| licence | AGPL-3.0-or-later (derived from Ultralytics YOLO11, AGPL-3.0) |",
        "",
        "## Intended use",
        "",
        "Flag photos of street scenes that show illegally dumped waste (piles, bags, bulky items, rubble) or",
        "overflowing bins, so that a cleansing team can review them and plan collection. A person confirms",
        "each incident before work is scheduled. Runs on an ordinary CPU through onnxruntime.",
        "",
        "Not for: identifying people or vehicles, enforcement decisions without human review, or any",
        "scene type it was not evaluated on (indoor, aerial, video from inside collection trucks).",
        "",
        *sections.training_data(card),
        "## Training",
        "",
        f"- {card.get('epochs_done')} epochs at {card['imgsz']} px, batch {config.get('batch')}, seed "
        f"{config.get('seed')}, {hours:.2f} h on {card.get('device') or 'cpu'}",
        *_start_lines(config),
        *_averaged_lines(card),
        f"- dataset hash `{card.get('data_hash')}`",
        f"- software: {', '.join(f'{k} {v}' for k, v in (card.get('software') or {}).items())}",
        "",
        "## Evaluation (through `vipare evaluate`, the shipped ONNX detector)",
        "",
    ]
    evaluations = card.get("evaluations") or []
    if not evaluations:
        lines += ["Not measured yet.", ""]
    for ev in evaluations:
        lines += _evaluation_section(ev)
    lines += sections.calibration(card)
    lines += sections.tiles(card)
    lines += _adaptation_section(card)
    lines += ["## Cost per photo on a CPU", ""]
    cost = card.get("cost") or {}
    if not cost:
        lines += ["Not measured yet.", ""]
    else:
        lines += ["| photos | wall ms (median) | CPU ms (median) | threads | machine |", "|---|---|---|---|---|"]
        for name, c in cost.items():
            lines.append(f"| {name} ({c['photos']} x {c['rounds']}) | {c['median_ms']} | {c['median_cpu_ms']} | "
                         f"{c['threads']} | {c['machine']} |")
        lines.append("")
    lines += ["## Comparisons at the same budget", ""]
    comparisons = card.get("comparisons") or []
    if not comparisons:
        lines += [
            "Not measured yet: (a) from scratch vs (b) from the imported COCO weights at the same epoch",
            "budget, and (c) input size 320 / 480 / 640, mAP50 against milliseconds per photo.",
            "",
        ]
    for record in comparisons if isinstance(comparisons, list) else [comparisons]:
        lines += _comparison(record)
    lines += sections.ablation(card)
    lines += sections.energy(card)
    lines += _int8_section(card)
    lines += [
        "## Known limits",
        "",
        "- Trained on street photos from Chinese cities (640x640, stretched by the dataset exporter) and, when",
        "  the training data above says so, Korean phone photos of bags; European street furniture, night",
        "  scenes and bulky items beside containers are under-represented (night and rain only as",
        "  augmentation). A city's own reviews are the way to its streets (see the adaptation section).",
        "- `dumped_waste` boxes follow the training data's convention of one box per pile; photos labelled one",
        "  box per bag (trash-bags-kr) score lower on box metrics than on the image-level verdict.",
        "- `bin` is context only and never counts as a deposit; an overflowing bin may be read as a plain bin.",
        "- The held-out set from another country (trash-bags-kr) has no photo without a deposit, so the",
        "  specificity outside the training cities is not measured; expect more false alarms there than above.",
        "- The verdict thresholds were chosen on few photos without a deposit (see their section): each such",
        "  photo moves the specificity there by a few points.",
        "",
        "## Reproduce",
        "",
        "See README.md, section *Train, evaluate and ship a model*.",
        "",
    ]
    return "\n".join(lines)


def _tile_pairs(evaluations: list[dict[str, Any]], untiled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each evaluation without the tiled look beside the card's evaluation of the same data.

    Raises:
        click.UsageError: when one has no evaluation of the same dataset and split to go beside.
    """
    pairs = []
    for ev in untiled:
        match = [e for e in evaluations if (e["dataset"], e["split"]) == (ev["dataset"], ev["split"])]
        if not match:
            raise click.UsageError(f"--tiles-evaluation of {ev['dataset']} ({ev['split']}) has no --evaluation "
                                   "of the same dataset and split")
        on, off = (match[0], ev) if match[0].get("tiles_when_empty") else (ev, match[0])
        pairs.append({"without": off, "with": on})
    return pairs


def _comparison(comparisons: dict[str, Any]) -> list[str]:
    """One table of same-budget runs (starting points, or input sizes of the shipped model)."""
    budget, timing = comparisons["budget"], comparisons["timing"]
    sizes = all(c["start"] == "the shipped model" for c in comparisons["runs"])
    lines = [
        "### " + ("Input size: the shipped model fine-tuned further" if sizes else "Starting point and input size"),
        "",
        f"Each run: {budget['epochs']} epochs on {budget['train_photos']} training photos "
        f"({budget['fraction']:.0%} of the training split), batch {budget['batch']}, seed {budget['seed']}, "
        f"device {budget['device']}"
        + (f"; from `weights/vipare-yolo11n.pt` sha256 `{budget['shipped_checkpoint_sha256'][:12]}`"
           if "shipped_checkpoint_sha256" in budget else "")
        + "; weights of the last epoch, exported to ONNX and measured through",
        f"`vipare evaluate` on the {comparisons['runs'][0]['eval_images']} validation photos. "
        f"Milliseconds per photo: median of {timing['what']} over {timing['photos']} "
        f"{timing.get('kind', 'validation JPEGs')} x {timing['rounds']} rounds, each model over all of them in turn "
        f"({timing['machine']}).",
        "",
        "| run | start | input | epochs | train min | mAP50 | mAP50-95 | AP50 dumped_waste | "
        "image recall | image specificity | image AUC | ms/photo | CPU ms/photo |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons["runs"]:
        lines.append(
            f"| {c['name']} | {c['start']} | {c['imgsz']} | {c['epochs']} | {_fmt(c['train_minutes'], 1)} | "
            f"{_fmt(c['map50'])} | {_fmt(c['map50_95'])} | {_fmt(c['ap50_dumped_waste'])} | "
            f"{_fmt(c['image_recall'])} | {_fmt(c['image_specificity'])} | {_fmt(c.get('image_auc'))} | "
            f"{_fmt(c['ms_per_photo'], 1)} | {_fmt(c['cpu_ms_per_photo'], 1)} |"
        )
    lines += [
        "",
        "These runs are short on purpose (the same budget for all), so their figures sit below the shipped",
        "model's, which trained longer on every photo; they compare "
        + ("input sizes." if sizes else "starting points and input sizes."),
        "Reproduce: `python -m training.compare --data runs/data/swcn/data.yaml"
        + (" --sizes --phone-photos 10 --out runs/compare-sizes`." if sizes else "`."),
        "",
    ]
    return lines


def _int8_record(path: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    """File facts and quantization record of the INT8 copy (its metadata says how it was made)."""
    import hashlib

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "vipare_quantization" not in props:
        raise SystemExit(f"{path} has no vipare_quantization metadata: make it with python -m training.quantize")
    return {
        **earlier,
        "model": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "quantization": json.loads(props["vipare_quantization"]),
    }


@click.command()
@click.argument("card", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--evaluation", "evaluations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="JSON from 'vipare evaluate --output' (repeatable); replaces earlier ones.")
@click.option("--comparisons", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="comparisons.json from python -m training.compare (repeatable); replaces earlier ones.")
@click.option("--int8", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The INT8 copy from python -m training.quantize.")
@click.option("--int8-evaluation", "int8_evaluations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="JSON from 'vipare evaluate --output' of the INT8 copy (repeatable).")
@click.option("--tiles-evaluation", "untiled", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="JSON from 'vipare evaluate --output' with the other VIPARE_TILES_WHEN_EMPTY, set "
              "beside the --evaluation of the same dataset (repeatable).")
@click.option("--ablation", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ablation.json from python -m training.ablation.")
@click.option("--measure-cost", "measure", is_flag=True, help="Time the pipeline on this machine.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown path (default: MODEL_CARD.md beside CARD).")
def main(card: Path, evaluations: tuple[Path, ...], comparisons: tuple[Path, ...], int8: Path | None,
         int8_evaluations: tuple[Path, ...], untiled: tuple[Path, ...], ablation: Path | None, measure: bool,
         out: Path | None) -> None:
    """Write MODEL_CARD.md from CARD, the model's JSON twin, adding measured evaluations and cost.

    Every figure in the card comes from a file this command reads or a measurement it makes:

    \b
        python -m training.model_card weights/vipare-yolo11n.json \\
            --evaluation runs/eval/swcn-val.json --evaluation runs/eval/kr.json --measure-cost

    --measure-cost times the shipped pipeline on phone-like 12 MP JPEGs and on dataset photos on
    this machine; CARD is updated in place.
    """
    record = json.loads(card.read_text())
    if evaluations:
        record["evaluations"] = [json.loads(p.read_text()) for p in evaluations]
    if comparisons:
        record["comparisons"] = [json.loads(p.read_text()) for p in comparisons]
    if untiled:
        record["tiles"] = _tile_pairs(record.get("evaluations") or [], [json.loads(p.read_text()) for p in untiled])
    if ablation is not None:
        record["ablation"] = json.loads(ablation.read_text())
    if int8 is not None:
        record["int8"] = _int8_record(int8, record.get("int8") or {})
    if int8_evaluations:
        record.setdefault("int8", {})["evaluations"] = [json.loads(p.read_text()) for p in int8_evaluations]
    if measure:
        _measure_card_cost(card, record)
    card.write_text(json.dumps(record, indent=2, default=str) + "\n")
    target = out or card.with_name("MODEL_CARD.md")
    target.write_text(render(record))
    click.echo(target)


def _measure_card_cost(card: Path, record: dict[str, Any]) -> None:
    """Time the model (and its INT8 copy, if the card has one) on phone JPEGs and dataset photos."""
    from training.compare import time_models
    from training.phone_photos import SHARED_VAL, make_phone_photos

    model = card.with_name(record["model"])
    phone = make_phone_photos(ROOT / "runs" / "phone-photos", 10)
    dataset = sorted(SHARED_VAL.glob("*.jpg"))[:20]
    sets = {"12 MP phone JPEGs": phone, "640x640 dataset JPEGs": dataset}
    record["cost"] = {name: measure_cost(model, photos) for name, photos in sets.items()}
    if record.get("int8", {}).get("model"):
        int8_model = card.with_name(record["int8"]["model"])
        record["int8"]["cost"] = {
            name: {"photos": len(photos), "rounds": 3, "machine": machine(),
                   **time_models({"float": model, "int8": int8_model}, photos, rounds=3)}
            for name, photos in sets.items()
        }


if __name__ == "__main__":
    main()
