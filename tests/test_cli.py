"""``vipare detect``: files, folders and globs in; JSON lines or a table out; bad files reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.imagegen import make_photo
from tests.onnxgen import make_centre_deposit_onnx
from vipare.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_centre_deposit_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(make_photo("JPEG", (400, 300), lat=49.1, lon=6.17))
    (folder / "sub" / "b.png").write_bytes(make_photo("PNG", (300, 400)))
    (folder / "notes.txt").write_text("not a photo, and not picked from a folder")
    return folder


def _run(*args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, ["detect", *args])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


def test_folder_gives_one_json_object_per_image(model: Path, photos: Path) -> None:
    code, lines, err = _run("--model", str(model), str(photos))
    assert code == 0, err
    assert [Path(x["source"]).name for x in lines] == ["a.jpg", "b.png"]
    assert lines[0]["location"]["source"] == "exif"
    assert lines[1]["location"] is None
    assert lines[0]["verdict"]["dumping"] is True
    assert lines[1]["image"]["width"] == 300 and lines[1]["image"]["height"] == 400


def test_glob_and_lat_lon(model: Path, photos: Path) -> None:
    code, lines, _ = _run("--model", str(model), "--lat", "-33.5", "--lon", "151.25", "--accuracy", "8",
                          str(photos / "**" / "*.png"))
    assert code == 0
    assert len(lines) == 1
    assert lines[0]["location"]["source"] == "client"
    assert lines[0]["location"]["lat"] == -33.5 and lines[0]["location"]["accuracy_m"] == 8


def test_bad_files_are_reported_and_the_rest_processed(model: Path, photos: Path) -> None:
    bad = photos / "broken.jpg"
    bad.write_text("hello, I am text")
    empty = photos / "empty.jpg"
    empty.write_bytes(b"")
    code, lines, err = _run("--model", str(model), str(bad), str(photos / "a.jpg"), str(empty),
                            str(photos / "missing.jpg"))
    assert code == 1
    assert len(lines) == 1 and lines[0]["source"].endswith("a.jpg")
    errors = err.strip().splitlines()
    assert len(errors) == 3
    assert all(line.startswith("error: ") for line in errors)
    assert "broken.jpg" in errors[0] and "empty.jpg" in errors[1] and "missing.jpg" in errors[2]


def test_table_and_annotated_output(model: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated"
    result = CliRunner().invoke(main, ["detect", "--model", str(model), "--format", "table",
                                       "--save-annotated", str(out), str(photos)])
    assert result.exit_code == 0, result.stderr
    assert "DUMPING" in result.stdout and "dumped_waste" in result.stdout
    written = sorted(out.glob("*.jpg"))
    assert [p.name.split("-")[0] for p in written] == ["a", "b"]
    with Image.open(written[0]) as im:
        assert im.size == (400, 300)  # drawn on the full-size photo
        drawn = np.asarray(im).astype(int)
    # The deposit box spans x 100..300, y 50..250 of the 400x300 photo: its left edge is drawn in red.
    edge = drawn[60:240, 99:102]
    assert ((edge[..., 0] - edge[..., 2]) > 60).mean() > 0.8


def test_missing_model_is_a_clear_error(photos: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["detect", "--model", str(tmp_path / "nope.onnx"), str(photos)])
    assert result.exit_code == 1
    assert "nope.onnx" in result.stderr


def test_lat_without_lon_is_a_usage_error(model: Path, photos: Path) -> None:
    result = CliRunner().invoke(main, ["detect", "--model", str(model), "--lat", "49", str(photos)])
    assert result.exit_code == 2
    assert "--lon" in result.stderr


def test_commands_come_from_the_entry_points() -> None:
    from vipare import cli

    declared = cli._plugin_commands()
    assert {"serve", "keys", "cameras", "batch", "evaluate"} <= declared.keys()
    assert declared["serve"].extras == ["serve"] and declared["evaluate"].extras == ["train"]
    shown = CliRunner().invoke(main, ["--help"])
    assert shown.exit_code == 0
    assert all(name in shown.stdout for name in ("detect", "serve", "evaluate", "batch"))


def test_commands_of_missing_extras_are_listed_and_explain_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from vipare import cli

    missing = EntryPoint("train", "not_installed_module:train [train]", cli.COMMAND_GROUP)
    monkeypatch.setattr(cli, "_plugin_commands", lambda: {"train": missing})
    runner = CliRunner()
    shown = runner.invoke(main, ["--help"])
    assert shown.exit_code == 0 and "detect" in shown.stdout and "needs vipare[train]" in shown.stdout
    ran = runner.invoke(main, ["train", "--epochs", "3"])
    assert ran.exit_code == 1
    assert "not_installed_module" in ran.stderr and "pip install 'vipare[train]'" in ran.stderr


def test_detect_loads_no_command_of_an_extra(model: Path, photos: Path) -> None:
    """``vipare detect`` runs without importing the modules behind the other commands."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from vipare.cli import main\n"
        f"main(['detect', '--model', {str(model)!r}, {str(photos / 'a.jpg')!r}], standalone_mode=False)\n"
        "print(','.join(m for m in ('serving', 'training', 'fastapi', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.splitlines()[-1] == ""


def test_the_program_runs_the_command_then_skips_the_last_collection(model: Path, photos: Path) -> None:
    """``vipare`` (the console script, ``python -m vipare.cli``) keeps the exit status and freezes the heap."""
    import subprocess
    import sys

    script = (
        "import gc, sys\n"
        "from vipare.cli import run\n"
        f"sys.argv = ['vipare', 'detect', '--model', {str(model)!r}, {str(photos / 'a.jpg')!r}, 'missing.jpg']\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'frozen', gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "exit 1 frozen True"  # a.jpg analysed, missing.jpg reported
    assert json.loads(done.stdout.splitlines()[0])["source"].endswith("a.jpg")
