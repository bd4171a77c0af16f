"""Batch jobs end to end, fast: the stand-in model, analyses in the test's process (``workers=0``).

The store: every usable frame becomes one report of its camera, placed by EXIF, frames.csv or the
camera, timed by frames.csv, EXIF or its name, grouped into incidents; a second run skips them.
JSON lines: one line per frame, fsynced; a torn last line is cut off and its frame written again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.batch import sinks
from serving.batch.engines import LocalEngine
from serving.batch.frames import FrameRef, FrameTask
from serving.batch.job import BatchConfig, run_batch
from serving.batch.progress import Reporter, Summary
from serving.batch.sinks import SinkError, StoreSink
from serving.config import ServiceSettings
from serving.db import engine_from_settings, session_factory
from serving.models import Incident, Report
from serving.photos.store import OWNER_FILE, PhotoStore
from serving.reports.store import NewReport, Submitted
from tests.batch.store_view import report_rows
from tests.imagegen import make_photo, pattern_array
from tests.onnxgen import make_colour_detector_onnx, small_deposit_photo
from vipare import Settings
from vipare.cli import main
from vipare.errors import ModelError
from vipare.geotag import CameraPosition

CAMERAS_CSV = (
    "id,lat,lon,accuracy_m,heading_deg,description\n"
    "cam-a,49.1193,6.1757,3,90,rue X facing the bins\n"
    "truck-1,,,,,sweeper\n"
)


def frame(seed: int, **exif: object) -> bytes:
    """A small JPEG of its own (seeded noise), with EXIF as ``make_photo`` takes it."""
    return make_photo("JPEG", array=pattern_array((64, 48), "noise", seed=seed), **exif)  # type: ignore[arg-type]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Frames of a fixed camera and a truck, with the usual problems among them."""
    root = tmp_path / "frames"
    files = {
        "cam-a/cam-a_20240501_093000.jpg": frame(1),  # time from the name, position from the camera
        "cam-a/cam-a_20240501_094000.jpg": frame(2),
        "cam-a/copy_of_first.jpg": frame(1),  # the same frame again: a duplicate
        "cam-a/broken.jpg": frame(3)[:200],  # cut short
        "truck-1/t1.jpg": frame(4),  # frames.csv gives its position and time
        "truck-1/t2.jpg": frame(5, lat=49.2001, lon=6.2001,  # its own GPS, and an EXIF time with offset
                                 captured_at=datetime(2024, 5, 2, 8, 0, tzinfo=UTC)),
        "truck-1/t3.jpg": frame(6),  # no position at all
        "cam-z/z.jpg": frame(7),  # an unregistered camera
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "frames.csv").write_text(
        "file,camera_id,captured_at,lat,lon\n"
        "truck-1/t1.jpg,truck-1,2024-05-01T12:00:00+02:00,49.3001,6.3001\n"
    )
    (tmp_path / "cameras.csv").write_text(CAMERAS_CSV)
    return root


def disk_full(*_args: object, **_kwargs: object) -> None:
    """Stands in for a photo store's write or fsync on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _run(source: Path, settings: ServiceSettings, **options: object) -> Summary:
    options = {"workers": 0, **options}
    config = BatchConfig(source=str(source), cameras_file=source.parent / "cameras.csv", threads=1,
                         **options)  # type: ignore[arg-type]
    return run_batch(config, settings, Reporter(live=False))


def test_frames_become_reports_of_their_camera_and_a_second_run_skips_them(
    source: Path, settings: ServiceSettings
) -> None:
    first = _run(source, settings)
    assert (first.frames, first.written, first.duplicates, first.skipped) == (8, 4, 1, 0)
    assert first.errors == {"corrupt_image": 1, "location_missing": 1, "unknown_camera": 1}
    assert first.deposits == 4 and sum(first.incidents.values()) == 4

    engine = engine_from_settings(settings)
    try:
        with session_factory(engine)() as session:
            reports = {r.image["sha256"][:8]: r for r in session.scalars(select(Report))}
            by_source = {r.location["source"]: r for r in reports.values()}
            camera = [r for r in reports.values() if r.location_source == "camera"]
            assert {r.client_ref for r in reports.values()} == {"camera:cam-a", "camera:truck-1"}
            assert {r.submitted_by for r in reports.values()} == {"vipare batch"}
            assert sorted(r.observed_at for r in camera) == [
                datetime(2024, 5, 1, 9, 30, tzinfo=UTC), datetime(2024, 5, 1, 9, 40, tzinfo=UTC)
            ]
            assert all((r.lat, r.lon, r.camera_id) == (49.1193, 6.1757, "cam-a") for r in camera)
            client = by_source["client"]
            assert (client.lat, client.lon, client.camera_id) == (49.3001, 6.3001, "truck-1")
            assert client.observed_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
            exif = by_source["exif"]
            assert round(exif.lat, 4) == 49.2001 and exif.observed_at == datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
            incidents = session.scalars(select(Incident)).all()
            assert sorted(i.report_count for i in incidents) == [1, 1, 2]  # cam-a's two frames: one incident
            photos = PhotoStore(settings.photo_dir)
            assert all(photos.path(r.sha256, r.photo_ext).exists() for r in reports.values())
    finally:
        engine.dispose()

    second = _run(source, settings)
    assert (second.written, second.skipped, second.duplicates, second.analysed) == (0, 5, 0, 2)  # the copy too
    assert second.errors == first.errors  # failed frames are tried again


def test_a_frame_is_committed_only_once_its_photo_is_on_disk(
    source: Path, settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos are put without fsync as frames are analysed; each transaction syncs its photos first."""
    inodes: set[int] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        inodes.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    photos = PhotoStore(settings.photo_dir)
    committed: list[str] = []
    real_store_reports = sinks.store_reports

    def store_reports(session: Session, reports: Sequence[NewReport], **kwargs: Any) -> list[Submitted]:
        for report in reports:
            path = photos.path(report.result.image.sha256, report.ext)
            assert {path.stat().st_ino, path.parent.stat().st_ino, photos.root.stat().st_ino} <= inodes
            committed.append(report.result.image.sha256)
        return real_store_reports(session, reports, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(sinks, "store_reports", store_reports)
    summary = _run(source, settings, commit_every=2)
    assert summary.written == 4 and len(committed) == 4


def test_frames_gather_while_the_writer_thread_commits(
    source: Path, settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop goes on while a transaction is written: the frames that come meanwhile make the next one."""
    batches: list[int] = []
    real_write = StoreSink.write

    def slow_write(self: StoreSink, items: Sequence[Any]) -> Any:
        batches.append(len(items))
        time.sleep(0.5)  # a slow disk
        return real_write(self, items)

    monkeypatch.setattr(StoreSink, "write", slow_write)
    summary = _run(source, settings, commit_every=2, commit_seconds=0.0)
    assert summary.written == 4 and sum(summary.incidents.values()) == 4
    assert sum(batches) == 4 and max(batches) == 2 and len(batches) < 4  # never more than commit_every
    assert len(report_rows(settings.data_dir)) == 4


@pytest.mark.parametrize("failing", ["put", "sync_file"])  # the worker's write, the job's fsync
def test_a_photo_that_cannot_reach_the_disk_stops_the_job_before_its_frame_is_written(
    source: Path, settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    monkeypatch.setattr(PhotoStore, failing, disk_full)
    with pytest.raises(SinkError, match="No space left on device.*free the disk.*run the same command again"):
        _run(source, settings)
    assert report_rows(settings.data_dir) == []
    result = CliRunner().invoke(main, [
        "batch", str(source), "--cameras", str(tmp_path / "cameras.csv"), "--data-dir", str(settings.data_dir),
        "--model", str(settings.model_path), "--workers", "0", "--no-progress",
    ])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.output and "run the same command again" in result.output


def test_a_photo_the_job_cannot_store_is_a_sink_error(
    settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job puts the photos of frames analysed by Ray actors, which keep none."""
    monkeypatch.setattr(PhotoStore, "put", disk_full)
    sink = StoreSink(settings, {})
    try:
        with pytest.raises(SinkError, match="cannot store a photo in .*No space left on device.*free the disk"):
            sink.store_photo(frame(1), "ab" * 32, "jpg")
    finally:
        sink.close()


def test_json_lines_resume_after_a_torn_last_line(source: Path, settings: ServiceSettings, tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.jsonl"
    first = _run(source, settings, output=out)
    assert first.written == 4 and not settings.photo_dir.exists()  # no store, no photos
    lines = out.read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)  # written in name order
    assert records[0]["result"]["location"]["source"] == "camera"
    assert records[0]["captured_at"] == "2024-05-01T09:30:00+00:00"

    # A kill while the last line was being written: a line and a half left on disk.
    out.write_bytes(b"".join(lines[:2]) + lines[2][:25])
    resumed = _run(source, settings, output=out)
    assert (resumed.written, resumed.skipped) == (2, 3)  # the copy of the first frame too
    again = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert len(again) == 4 and {(r["camera_id"], r["sha256"]) for r in again} == {
        (r["camera_id"], r["sha256"]) for r in records
    }
    assert out.read_bytes().endswith(b"\n")

    assert _run(source, settings, output=out).written == 0


def test_json_lines_need_no_face_or_plate_search(source: Path, settings: ServiceSettings, tmp_path: Path) -> None:
    """JSON lines keep no photo: the job loads no face or plate detector; into the store it must have them."""
    without = settings.model_copy(update={"face_model_path": tmp_path / "no-yunet.onnx"})
    assert _run(source, without, output=tmp_path / "out.jsonl").written > 0
    with pytest.raises(ModelError, match="face model"):
        _run(source, without)
    assert report_rows(settings.data_dir) == []


def test_a_damaged_complete_line_stops_the_job(source: Path, settings: ServiceSettings, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"camera_id": "cam-a", "sha256": "ab"}\nnot json\n')
    with pytest.raises(SinkError, match="line 2 is not a result line"):
        _run(source, settings, output=out)


def test_the_command_prints_a_summary_and_fails_when_frames_fail(
    source: Path, settings: ServiceSettings, tmp_path: Path
) -> None:
    data_dir = str(settings.data_dir)
    runner = CliRunner()
    common = ["--data-dir", data_dir, "--model", str(settings.model_path), "--workers", "0", "--no-progress"]
    added = runner.invoke(main, ["cameras", "import", str(tmp_path / "cameras.csv"), "--data-dir", data_dir])
    assert added.exit_code == 0 and "2 added" in added.output
    result = runner.invoke(main, ["batch", str(source), *common])
    assert result.exit_code == 1, result.output
    assert "batch: written     4 (4 with deposits" in result.output
    assert "errors      3 (1 corrupt_image, 1 location_missing, 1 unknown_camera)" in result.output
    assert "error: cam-a/broken.jpg: corrupt_image:" in result.output

    clean = runner.invoke(main, ["batch", f"{source}/cam-a/cam-a_*.jpg", "--camera", "cam-a", *common])
    assert clean.exit_code == 0, clean.output
    assert "skipped     2" in clean.output

    listed = runner.invoke(main, ["cameras", "list", "--data-dir", data_dir])
    assert listed.output.splitlines() == [
        "id,lat,lon,accuracy_m,heading_deg,description",
        "cam-a,49.1193,6.1757,3.0,90.0,rue X facing the bins",
        "truck-1,,,,,sweeper",
    ]
    moved = runner.invoke(main, ["cameras", "add", "cam-a", "--lat", "49.2", "--lon", "6.2", "--data-dir", data_dir])
    assert moved.exit_code == 0 and "updated" in moved.output
    bad = runner.invoke(main, ["cameras", "add", "cam a", "--data-dir", data_dir])
    assert bad.exit_code == 2 and "pattern" in bad.output


def test_a_missing_source_is_a_clear_error(settings: ServiceSettings, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "nowhere"), "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 1 and "no such folder or zip archive" in result.output


def test_workers_started_early_are_stopped_when_the_source_is_unusable(settings: ServiceSettings,
                                                                      tmp_path: Path) -> None:
    import multiprocessing

    from serving.batch.sources import SourceError

    config = BatchConfig(source=str(tmp_path / "nowhere"), workers=2, threads=1)
    with pytest.raises(SourceError, match="no such folder or zip archive"):
        run_batch(config, settings, Reporter(live=False))
    assert multiprocessing.active_children() == []
    assert not settings.photo_dir.exists() or not any(settings.photo_dir.iterdir())


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_worker_processes_give_what_the_job_process_gives(
    source: Path, settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    """From the fork server (Linux's default) or spawned, two workers write the same lines as the job's process."""
    from serving.batch import engines

    def lines(output: Path, workers: int) -> list[dict[str, object]]:
        summary = _run(source, settings, output=output, workers=workers)
        assert summary.written == 4 and summary.errors == {"corrupt_image": 1, "location_missing": 1,
                                                          "unknown_camera": 1}
        records = [json.loads(line) for line in output.read_text().splitlines()]
        return [{k: r[k] for k in ("frame", "camera_id", "sha256", "captured_at", "result")} for r in records]

    inline = lines(tmp_path / "inline.jsonl", workers=0)
    monkeypatch.setattr(engines, "default_start_method", lambda: start_method)
    assert lines(tmp_path / f"{start_method}.jsonl", workers=2) == inline
    import multiprocessing

    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_model_that_cannot_be_loaded_is_a_clear_error_and_nothing_is_written(
    source: Path, settings: ServiceSettings, tmp_path: Path, workers: str
) -> None:
    """In the job's process or in its workers, a bad model stops the job with its reason, before any frame."""
    import multiprocessing

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(main, [
        "batch", str(source), "--cameras", str(tmp_path / "cameras.csv"), "--data-dir", str(settings.data_dir),
        "--model", str(bad), "--workers", workers, "--threads", "1", "--no-progress",
    ])
    assert result.exit_code == 1, result.output
    assert f"{bad} is not a usable ONNX model" in result.output
    assert "Traceback" not in result.output and "written" not in result.output
    assert multiprocessing.active_children() == []
    assert report_rows(settings.data_dir) == []
    assert not [p for p in settings.photo_dir.rglob("*") if p.is_file() and p.name != OWNER_FILE]  # no photo


def test_the_fork_servers_preload_exits_at_once_with_its_output_flushed() -> None:
    """The server's interpreter skips its teardown (handlers registered before the preload do not run) but
    loses nothing it printed."""
    code = (
        "import atexit; atexit.register(print, 'torn down');"
        "import serving.batch.preload; print('printed before exit')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["printed before exit"]


def test_a_worker_waiting_for_frames_lives_through_ctrl_c(tmp_path: Path, settings: ServiceSettings) -> None:
    """Ctrl-C reaches the whole process group; the job handles it, so an idle worker must not die of it."""
    path = tmp_path / "f.jpg"
    path.write_bytes(frame(1))
    task = FrameTask(0, "f.jpg", FrameRef(str(path)), hashlib.sha256(path.read_bytes()).hexdigest(),
                     CameraPosition(lat=49.1193, lon=6.1757, camera_id="cam-a"), None)
    library = Settings(model_path=settings.model_path, intra_op_threads=1)
    engine = LocalEngine(library, workers=1, photos_at=None)
    engine.start()
    try:
        assert engine._ready[0].result(timeout=60) is None  # the worker is up, waiting for frames
        [worker] = engine._pool._processes.values()  # type: ignore[union-attr]
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGINT)
        time.sleep(0.5)
        assert worker.is_alive()
        [outcome] = list(engine.run([task]))
        assert outcome.error is None and outcome.result is not None
    finally:
        engine.close()


def test_into_the_store_a_job_uses_the_promoted_model(
    source: Path, settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model a city promoted analyses its cameras' frames too; --model and --output keep theirs."""
    import numpy as np

    from tests.onnxgen import TAXONOMY_NAMES, make_detector_onnx

    monkeypatch.setenv("VIPARE_MODEL_PATH", str(settings.model_path))
    data_dir = str(settings.data_dir)
    runner = CliRunner()
    imported = runner.invoke(main, ["cameras", "import", str(tmp_path / "cameras.csv"), "--data-dir", data_dir])
    assert imported.exit_code == 0, imported.output
    city = tmp_path / "city.onnx"  # the stand-in's box, scored 0.7 instead of 0.8: another model
    raw = np.zeros((1, 4 + len(TAXONOMY_NAMES), 1), dtype=np.float32)
    raw[0, :, 0] = [32, 32, 32, 32, 0.7, 0.0, 0.0]
    make_detector_onnx(city, names=TAXONOMY_NAMES, imgsz=(64, 64), stride=32, raw=raw)
    promoted = runner.invoke(main, ["models", "promote", str(city), "--data-dir", data_dir, "--comment", "city"])
    assert promoted.exit_code == 0, promoted.output
    result = runner.invoke(main, ["batch", f"{source}/cam-a/cam-a_*.jpg", "--camera", "cam-a", "--data-dir", data_dir,
                                  "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    engine = engine_from_settings(settings)
    try:
        with session_factory(engine)() as session:
            shas = {r.model_sha256 for r in session.scalars(select(Report))}
    finally:
        engine.dispose()
    assert shas == {hashlib.sha256(city.read_bytes()).hexdigest()}


@pytest.mark.parametrize("frame_tiles", [False, True])
def test_frames_get_the_tiled_second_look_only_when_set(tmp_path: Path, frame_tiles: bool) -> None:
    """Photos get it with tiles_when_empty; a camera's frames, mostly without a deposit, only with
    frame_tiles_when_empty."""
    root = tmp_path / "frames"
    (root / "cam-a").mkdir(parents=True)
    (root / "cam-a" / "cam-a_20240501_093000.png").write_bytes(small_deposit_photo())
    (tmp_path / "cameras.csv").write_text(CAMERAS_CSV)
    model = make_colour_detector_onnx(tmp_path / "colour.onnx")
    settings = ServiceSettings(data_dir=tmp_path / "data", model_path=model, intra_op_threads=1,
                               tiles_when_empty=True, frame_tiles_when_empty=frame_tiles)
    out = tmp_path / "out.jsonl"
    assert _run(root, settings, output=out).written == 1
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["result"]["verdict"]["dumping"] is frame_tiles
