"""Averaging checkpoints of one model (``training.average``): the mean, the record, the refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from click.testing import CliRunner  # noqa: E402

from training.average import AVERAGE_KEY, average_checkpoints, average_state, main  # noqa: E402


def _state(value: float, batches: int = 7) -> dict[str, Any]:
    return {"conv.weight": torch.full((2, 3), value), "bn.num_batches_tracked": torch.tensor(batches)}


def test_the_average_is_the_weighted_mean_of_floating_tensors() -> None:
    averaged = average_state([_state(1.0, 7), _state(4.0, 9)], [2.0, 1.0])
    assert torch.allclose(averaged["conv.weight"], torch.full((2, 3), 2.0))
    assert int(averaged["bn.num_batches_tracked"]) == 7  # counters: the first checkpoint's


@pytest.mark.parametrize(("states", "weights", "message"), [
    ([_state(1.0)], [1.0], "two or more"),
    ([_state(1.0), _state(2.0)], [1.0], "one weight each"),
    ([_state(1.0), _state(2.0)], [0.0, 0.0], "not all zero"),
    ([_state(1.0), _state(2.0)], [-1.0, 2.0], "non-negative"),
    ([_state(1.0), {"conv.weight": torch.zeros(2, 3)}], [1.0, 1.0], "other tensors"),
    ([_state(1.0), {**_state(2.0), "conv.weight": torch.zeros(3, 3)}], [1.0, 1.0], "is (3, 3), (2, 3) in the first"),
])
def test_states_that_do_not_average_are_refused(states: list[dict[str, Any]], weights: list[float],
                                                message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        average_state(states, weights)


def _checkpoint(path: Path, nc: int, seed: int, slot: str = "model") -> Path:
    """A checkpoint as Ultralytics writes one: the weights under ``model`` (a finished run's) or ``ema``
    (a run's last.pt mid-training, ``model`` then None)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel("yolo11n.yaml", nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(nc)}
    weights = {"model": None, "ema": None, slot: model.half()}
    torch.save({**weights, "epoch": 3, "train_args": {"imgsz": 64, "seed": seed}}, path)
    return path


def _weights(path: Path) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt["ema"] or ckpt["model"]).state_dict()


@pytest.mark.parametrize("slot", ["model", "ema"])
def test_two_checkpoints_average_into_one_that_loads_and_says_what_it_came_from(tmp_path: Path, slot: str) -> None:
    from ultralytics import YOLO

    a, b = _checkpoint(tmp_path / "a.pt", 3, 0, slot), _checkpoint(tmp_path / "b.pt", 3, 1)
    out = str(tmp_path / "avg.pt")
    result = CliRunner().invoke(main, [str(a), str(b), "--out", out, "--weight", "3", "--weight", "1"])
    assert result.exit_code == 0, result.output
    assert "0.750 x" in result.output and "0.250 x" in result.output

    written = torch.load(tmp_path / "avg.pt", map_location="cpu", weights_only=False)
    assert [(r["path"], r["weight"]) for r in written[AVERAGE_KEY]] == [(str(a), 0.75), (str(b), 0.25)]
    assert all(len(r["sha256"]) == 64 for r in written[AVERAGE_KEY])
    assert written["train_args"] == {"imgsz": 64, "seed": 0}  # everything but the weights from the first
    assert written["epoch"] == -1 and written["ema"] is None and written["optimizer"] is None
    sa, sb = _weights(a), _weights(b)
    name = next(k for k, v in sa.items() if v.is_floating_point() and v.numel() > 100 and not torch.equal(v, sb[k]))
    expected = 0.75 * sa[name].float() + 0.25 * sb[name].float()
    assert torch.allclose(written["model"].state_dict()[name].float(), expected, atol=2e-3)
    assert not list((tmp_path).glob("*.part"))

    model = YOLO(str(tmp_path / "avg.pt"))
    assert model.names == {0: "class0", 1: "class1", 2: "class2"}


def test_checkpoints_of_other_classes_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    a, b = _checkpoint(tmp_path / "a.pt", 3, 0), _checkpoint(tmp_path / "b.pt", 2, 0)
    with pytest.raises(ValueError, match="different classes"):
        average_checkpoints([a, b], tmp_path / "avg.pt")
    result = CliRunner().invoke(main, [str(a), str(b), "--out", str(tmp_path / "avg.pt")])
    assert result.exit_code == 1 and "different classes" in result.output
    assert not (tmp_path / "avg.pt").exists()


def test_the_command_wants_two_checkpoints_and_one_weight_for_each(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt", 3, 0)
    once = CliRunner().invoke(main, [str(a), "--out", str(tmp_path / "avg.pt")])
    assert once.exit_code == 2 and "two or more checkpoints" in once.output
    weights = CliRunner().invoke(main, [str(a), str(a), "--out", str(tmp_path / "avg.pt"), "--weight", "1"])
    assert weights.exit_code == 2 and "one --weight per checkpoint" in weights.output


def test_a_file_without_weights_is_refused(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt", 3, 0)
    torch.save({"epoch": 3, "model": None, "ema": None}, tmp_path / "empty.pt")
    result = CliRunner().invoke(main, [str(a), str(tmp_path / "empty.pt"), "--out", str(tmp_path / "avg.pt")])
    assert result.exit_code == 1 and "holds no model weights" in result.output
    assert not list(tmp_path.glob("avg.pt*"))
