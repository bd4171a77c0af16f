"""Average the weights of checkpoints of one model, element by element (a "model soup").

A model fine-tuned further on the same photos drifts towards them: on photos from elsewhere it can
end up worse than where it started. The mean of the weights before and after such a run (Wortsman et
al., "Robust fine-tuning of zero-shot models", CVPR 2022; "Model soups", ICML 2022) usually keeps
what the run gained on its own photos and loses less elsewhere. The checkpoints must share an
architecture and class list, and the further run must start from the other one (weights far apart
in training do not average into a working model): export and evaluate the average like any run's
checkpoint (``python -m training.export RUN --weights average.pt``).

The first checkpoint gives the written one everything but the weights (training arguments,
Ultralytics' metadata); the weights are stored in half precision, as Ultralytics stores them, without
an optimizer state or EMA copy. Which files were averaged, with their sha256 and weights, is kept in
the checkpoint under ``vipare_average`` and reaches the model's card through the export.

Run::

    python -m training.average runs/train/base-480b/weights/last.pt weights/vipare-yolo11n.pt \\
        --out runs/train/base-480b/weights/average.pt
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["AVERAGE_KEY", "average_checkpoints", "average_state"]

log = logging.getLogger(__name__)

AVERAGE_KEY = "vipare_average"
"""Checkpoint key listing the averaged files: ``[{"path", "sha256", "weight"}, ...]``."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def average_state(states: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    """The weighted mean of ``states`` (``state_dict`` s of one architecture), in float32.

    Floating-point tensors are averaged; others (BatchNorm's batch counters) are taken from the
    first state.

    Raises:
        ValueError: the states do not have the same tensors and shapes, or the weights do not match
            them, are negative or add up to zero.
    """
    if len(states) < 2 or len(states) != len(weights):
        raise ValueError(f"need two or more states with one weight each, got {len(states)} and {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {list(weights)}")
    first = states[0]
    for i, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            differ = sorted(set(state) ^ set(first))[:5]
            raise ValueError(f"checkpoint {i} has other tensors than the first ({', '.join(differ)}...): "
                             "only checkpoints of one architecture average")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(f"checkpoint {i}: '{name}' is {tuple(tensor.shape)}, "
                                 f"{tuple(first[name].shape)} in the first")
    total = float(sum(weights))
    averaged: dict[str, Any] = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            averaged[name] = sum(state[name].float() * (w / total) for state, w in zip(states, weights, strict=True))
        else:
            averaged[name] = tensor.clone()
    return averaged


def average_checkpoints(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Write the average of the Ultralytics checkpoints ``paths`` to ``out``; returns what was averaged.

    Raises:
        ValueError: the checkpoints differ in architecture or classes (see :func:`average_state`).
    """
    import torch

    weights = list(weights) if weights is not None else [1.0] * len(paths)
    checkpoints = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    models = [ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None for ckpt in checkpoints]
    for path, model in zip(paths, models, strict=True):
        if model is None:
            raise ValueError(f"{path} holds no model weights ('ema' or 'model'): give Ultralytics checkpoints")
    names = [dict(m.names) for m in models]
    if any(n != names[0] for n in names[1:]):
        raise ValueError(f"the checkpoints name different classes: {names}")
    state = average_state([m.float().state_dict() for m in models], weights)
    model = models[0]
    model.load_state_dict(state)
    total = float(sum(weights))
    record = [{"path": str(p), "sha256": _sha256(p), "weight": round(w / total, 6)}
              for p, w in zip(paths, weights, strict=True)]
    written = dict(checkpoints[0])
    written.update(model=model.half(), ema=None, optimizer=None, updates=None, epoch=-1, best_fitness=None,
                   train_metrics=None, **{AVERAGE_KEY: record})  # the run's counters say nothing of an average
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    try:
        torch.save(written, partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return {"out": str(out), "averaged": record}


@click.command()
@click.argument("checkpoints", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (e.g. RUN/weights/average.pt).")
@click.option("--weight", "weights", type=click.FloatRange(min=0), multiple=True,
              help="One per checkpoint, in order (default: equal).")
def main(checkpoints: tuple[Path, ...], out: Path, weights: tuple[float, ...]) -> None:
    """Average CHECKPOINTS (two or more of one model) into one, element by element."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(checkpoints) < 2:
        raise click.UsageError("give two or more checkpoints to average")
    if weights and len(weights) != len(checkpoints):
        raise click.UsageError(f"give one --weight per checkpoint ({len(checkpoints)}), or none")
    try:
        done = average_checkpoints(checkpoints, out, weights or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for item in done["averaged"]:
        click.echo(f"{item['weight']:.3f} x {item['path']} (sha256 {item['sha256'][:12]})")
    click.echo(f"wrote {done['out']}")


if __name__ == "__main__":
    main()
