"""Model card sections for the training data, the verdict's calibration, the tiled second look, the
augmentation ablation and the energy; :mod:`training.model_card` puts them in order.

Each takes the JSON twin and returns Markdown lines; a section whose record is missing says so.
"""

from __future__ import annotations

from typing import Any

HELD_OUT_NOTE = {
    "trash-bags-kr": "trash-bags-kr photos are split by shooting session (a gap of more than 20 s between two "
    "shots starts a new one; whole sessions drawn with seed 0 until 40 photos are held out, "
    "`training.sessions`): the `fit` sessions train, the `holdout` sessions are never trained on and are the "
    "test from another country.",
    "street-waste-cn": "street-waste-cn training photos whose file-name sha256 falls in the first 10 % "
    "(`street-waste-cn:train:holdout`) are held out of this run's training (and, for a run from the COCO start, of "
    "the model's whole lineage): they choose the verdict thresholds.",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A figure, or ``n/a`` for a missing one."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def training_data(card: dict[str, Any]) -> list[str]:
    """Sources with credits, the specs each split came from, the counts and the class mapping."""
    lines = ["## Training data", "", *[f"- {d}" for d in card.get("datasets", [])], ""]
    dataset = card.get("dataset") or {}
    specs = dataset.get("specs") or {}
    if specs:
        lines += ["| split | imported from | photos | dumped_waste | overflowing_bin | bin |",
                  "|---|---|---|---|---|---|"]
        for split, parts in specs.items():
            boxes = (dataset.get("boxes") or {}).get(split) or {}
            lines.append(
                f"| {split} | {', '.join(f'`{p}`' for p in parts)} | {(dataset.get('images') or {}).get(split)} | "
                f"{boxes.get('dumped_waste', 0)} | {boxes.get('overflowing_bin', 0)} | {boxes.get('bin', 0)} |"
            )
        lines.append("")
    mappings = dataset.get("mappings") or {}
    if mappings:
        lines.append("Class mapping into the taxonomy: " + "; ".join(
            f"{source}: " + ", ".join(f"`{a}` -> `{b}`" for a, b in mapping.items())
            for source, mapping in mappings.items()) + ".")
        lines.append("")
    used = " ".join(str(p) for parts in specs.values() for p in parts)
    notes = [note for source, note in HELD_OUT_NOTE.items() if f"{source}:" in used and ":fit" in used]
    piles = dataset.get("piles")
    if piles:
        notes.append(f"{', '.join(piles['sources'])} boxes every bag; in the training photos, bags that touch (within "
                     f"{piles['gap']:g} of a bag's size, directly or through others) are joined into one box per pile, "
                     "street-waste-cn's convention (`training.datasets --piles`); the held-out photos keep one box per "
                     "bag, and a pile box covers each bag in it.")
    lines += [*(f"- {n}" for n in notes), ""] if notes else []
    lines += ["Both shared datasets are licensed CC BY 4.0; attribution as above.", ""]
    return lines


def calibration(card: dict[str, Any]) -> list[str]:
    """The per-class verdict thresholds and how they were chosen."""
    lines = ["## Verdict thresholds", ""]
    chosen = card.get("verdict_calibration")
    carried = card.get("verdict_thresholds_carried")
    if carried and not chosen:
        return [
            *lines,
            f"Carried from `{carried['carried_from']}`, whose thresholds were chosen on its calibration photos (a "
            "city's held-out photos are too few to choose them on):",
            "",
            "| class | threshold | found only in a tile |",
            "|---|---|---|",
            *[f"| {name} | {value:.2f} | {fmt(carried['tile_thresholds'].get(name), 2)} |"
              for name, value in carried["thresholds"].items()],
            "",
        ]
    if not chosen:
        return [*lines, "Not calibrated: every deposit class uses the default threshold 0.35.", ""]
    return [
        *lines,
        "A photo counts as dumping when a deposit-class detection scores at least its class's threshold. The "
        "thresholds were chosen by `python -m training.calibrate` on "
        f"{chosen['positives'] + chosen['negatives']} photos held out of the run that made the model "
        f"(`{chosen['dataset']}`, "
        f"{chosen['positives']} with a deposit, {chosen['negatives']} without), through the service's path "
        f"(tiled second look {'on' if chosen['tiles_when_empty'] else 'off'}): {chosen['rule']}.",
        "",
        "| class | threshold | found only in a tile |",
        "|---|---|---|",
        *[f"| {name} | {value:.2f} | {fmt((chosen.get('tile_thresholds') or {}).get(name), 2)} |"
          for name, value in chosen["thresholds"].items()],
        "",
        f"On those photos: recall {fmt(chosen['recall'])}, specificity {fmt(chosen['specificity'])} "
        f"(target recall {chosen['target_recall']}). The test figures above use these thresholds; each "
        "evaluation's image-level AUC ranks photos by their best deposit score minus its class's threshold.",
        "",
        *_firing(chosen),
    ]


def _firing(chosen: dict[str, Any]) -> list[str]:
    """How many clean calibration photos the model gives a deposit detection at all: the ones that measure
    specificity (recorded by ``training.calibrate`` since it counts them)."""
    from training.calibrate import GRID, MIN_NEGATIVES_FIRING

    firing = chosen.get("negatives_firing")
    if firing is None:
        return []
    line = (f"Photos without a deposit that get a deposit detection (a score of {GRID[0]} or more): {firing} of "
            f"{chosen['negatives']} in the whole photo, {chosen.get('negatives_firing_in_tiles', 'n/a')} in its tiles")
    if firing >= MIN_NEGATIVES_FIRING:
        return [line + ".", ""]
    floor = chosen.get("floor")
    if floor is not None:
        how = f"so none went below the uncalibrated default, {floor}, which the recall target allowed"
    elif "floor" in chosen:
        how = "and the recall target needed thresholds below the uncalibrated default"
    else:
        how = "so the recall rule alone set them, as low as it allows"
    return [
        line + f": too few to rank the verdict thresholds by specificity, {how} (a model whose lineage trained on "
        "these photos scores most of its clean ones 0); the test photos' specificity above is the measure.",
        "",
    ]


def _summary(ev: dict[str, Any]) -> tuple[str, ...]:
    level, cover = ev["image_level"], ev.get("deposit_coverage") or {}
    return (fmt(level.get("recall")), fmt(level.get("specificity")), fmt(cover.get("covered")),
            f"{fmt(cover.get('small_covered'))} of {cover.get('small_labels', 'n/a')}", fmt(ev.get("ms_per_image"), 1))


def tiles(card: dict[str, Any]) -> list[str]:
    """The tiled second look: each dataset measured with and without it."""
    lines = ["## Second look in tiles", ""]
    pairs = card.get("tiles") or []
    if not pairs:
        return [*lines, "Not measured yet.", ""]
    lines += [
        "When the whole photo shows no deposit, the service can look at it again in 2 x 2 overlapping tiles: "
        "for photos with `VIPARE_TILES_WHEN_EMPTY`, for street-camera frames with "
        "`VIPARE_FRAME_TILES_WHEN_EMPTY` (both off by default). Each dataset below through `vipare evaluate`, "
        "without and with it (same model, same thresholds). Covered: a labelled deposit with half its box or more "
        "inside a detected deposit box; small: under 1 % of the photo. ms: per photo, decode to detections, this run.",
        "",
        "| dataset | tiles | image recall | image specificity | covered | small covered | ms/photo |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        for label, ev in (("off", pair["without"]), ("on", pair["with"])):
            lines.append(f"| {ev['dataset']} ({ev['split']}) | {label} | " + " | ".join(_summary(ev)) + " |")
    return [*lines, ""]


def ablation(card: dict[str, Any]) -> list[str]:
    """What each augmentation brings, at the same short budget."""
    lines = ["## Augmentation ablation", ""]
    record = card.get("ablation")
    if not record:
        return [*lines, "Not measured yet.", ""]
    budget = record["budget"]
    lines += [
        f"Each run fine-tunes `{budget['start']}` for {budget['epochs']} epochs at {budget['imgsz']} px on "
        f"{budget['train_photos']} photos ({budget['optimizer']}, seed {budget['seed']}) and differs in one thing "
        "(`python -m training.ablation`); measured through `vipare evaluate` on street-waste-cn val and on the "
        f"trash-bags-kr held-out sessions (`{record['holdout']}`). Short on purpose: it shows directions, not the "
        "shipped model's figures. Recall and specificity at the uncalibrated default thresholds (0.35, tiles "
        "+0.25); the AUC does not depend on them.",
        "",
        "| run | adds | train min | mAP50 | AP50 dumped_waste | image AUC | image recall | image specificity | "
        "held-out recall | held-out covered |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        adds = ", ".join(f"{k} {v}" for k, v in r["augment"].items() if v) or "nothing"
        lines.append(
            f"| {r['name']} | {adds} | {fmt(r['train_minutes'], 1)} | {fmt(r['map50'])} | "
            f"{fmt(r['ap50_dumped_waste'])} | {fmt(r.get('image_auc'))} | {fmt(r['image_recall'])} | "
            f"{fmt(r['image_specificity'])} | "
            f"{fmt(r['holdout_image_recall'])} | {fmt(r['holdout_covered'])} |"
        )
    return [*lines, ""]


def energy(card: dict[str, Any]) -> list[str]:
    """CPU-seconds and estimated watt-hours, with the method."""
    lines = ["## Energy", ""]
    record = card.get("energy")
    if not record:
        return [*lines, "Not measured yet.", ""]
    lines += [
        f"Measured by `{record['command']}` on {record['machine']} with model `{record['model']}`. This machine "
        f"exposes no energy counter, so: {record['method']}, at {record['watts_per_core']:g} W per busy core "
        "(about a 200 W, 20-core server CPU's rated power per core; give another with `--watts-per-core`).",
        "",
        "| work | per | CPU-seconds | Wh (estimated) |",
        "|---|---|---|---|",
        *[f"| {r['work']} | {r['unit']} | {r['cpu_seconds']:.0f} | {r['wh']:.2f} |" for r in record["rows"]],
        "",
    ]
    return lines
