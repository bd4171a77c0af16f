"""Does the mirrored second view pay? A model evaluated with one view and with two, side by side.

With ``VIPARE_MIRRORED_VIEW`` the detector also runs the photo's mirror image and averages the two
outputs anchor by anchor (:meth:`vipare.detection.Detector.run`): a thing seen in one view only keeps
half its score. This command evaluates a model both ways through ``vipare evaluate``'s own code, at
the model's own verdict thresholds, and prints a table with the time per photo of each; ``--output``
keeps every evaluation.

    python -m training.mirror weights/vipare-yolo11n.onnx runs/data/swcn/data.yaml runs/data/kr-holdout
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from training.card_sections import fmt
from training.evaluate import evaluate
from vipare.settings import Settings


def _row(metrics: dict[str, Any]) -> str:
    level, cover = metrics["image_level"], metrics["deposit_coverage"]
    dumped = metrics["per_class"].get("dumped_waste", {})
    views = "photo + mirror" if metrics["mirrored_view"] else "photo"
    return (f"| {metrics['dataset']} | {views} | {fmt(metrics['map50'])} | {fmt(dumped.get('ap50'))} "
            f"| {fmt(level['recall'])} | {fmt(level['specificity'])} | {fmt(level['auc'])} | {fmt(cover['covered'])} "
            f"| {fmt(cover['small_covered'])} of {cover['small_labels']} | {fmt(metrics['ms_per_image'], 1)} |")


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("datasets", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every evaluation to this JSON file.")
def main(model: Path, datasets: tuple[Path, ...], output: Path | None) -> None:
    """Evaluate MODEL on each of DATASETS with one view, then with the mirrored second view."""
    lines = ["| dataset | views | mAP50 | AP50 dumped_waste | image recall | image specificity | image AUC | covered "
             "| small covered | ms/photo |", "|---|---|---|---|---|---|---|---|---|---|"]
    results = []
    for dataset in datasets:
        for mirrored in (False, True):
            metrics = evaluate(model, dataset, settings=Settings(mirrored_view=mirrored)).as_dict()
            results.append(metrics)
            lines.append(_row(metrics))
    if output is not None:
        output.write_text(json.dumps(results, indent=2) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
