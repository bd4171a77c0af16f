"""Batch jobs into a service whose photos are in an S3 bucket (moto's S3 server on 127.0.0.1).

The job's workers put each accepted frame's photo straight in the bucket (a PUT is durable when it
returns: nothing left to sync before the commit), whether they run in the job's process or in worker
processes that open the store from its :class:`~serving.photos.location.PhotoLocation`.
Skipped without boto3 or moto's server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from serving.batch.engines import LocalEngine
from serving.batch.frames import FrameRef, FrameTask
from serving.config import ServiceSettings
from serving.db import engine_from_settings, session_factory
from serving.models import Report
from serving.photos.location import photo_location
from serving.photos.store import OWNER_FILE
from tests.batch.test_batch_job import _run, frame, source  # noqa: F401 - source is a fixture
from tests.s3store import new_bucket, s3_client, s3_endpoint
from vipare import Settings
from vipare.geotag import CameraPosition


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_endpoint() as url:
        yield url


@pytest.fixture
def s3_settings(settings: ServiceSettings, endpoint: str) -> ServiceSettings:
    bucket = new_bucket(endpoint)
    return settings.model_copy(update={"photo_store": f"s3://{bucket}/city", "s3_endpoint_url": endpoint})


def bucket_keys(settings: ServiceSettings) -> set[str]:
    """The keys of the photos' copies in the bucket (not the object naming the store's database)."""
    bucket = settings.photo_store.removeprefix("s3://").split("/")[0]
    listed = s3_client(str(settings.s3_endpoint_url)).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed if not item["Key"].endswith(f"/{OWNER_FILE}")}


def test_a_job_puts_its_frames_photos_in_the_bucket_and_a_second_run_skips_them(
    source: Path, s3_settings: ServiceSettings  # noqa: F811 - the fixture imported above
) -> None:
    first = _run(source, s3_settings)
    assert first.written == 4
    engine = engine_from_settings(s3_settings)
    try:
        with session_factory(engine)() as session:
            stored = {f"city/{r.sha256[:2]}/{r.sha256}.{r.photo_ext}" for r in session.scalars(select(Report))}
    finally:
        engine.dispose()
    assert len(stored) == 4 and bucket_keys(s3_settings) == stored
    assert not s3_settings.photo_dir.exists()  # nothing under the data folder
    second = _run(source, s3_settings)
    assert (second.written, second.skipped) == (0, 5)


def test_worker_processes_open_the_bucket_themselves(tmp_path: Path, s3_settings: ServiceSettings) -> None:
    path = tmp_path / "f.jpg"
    path.write_bytes(frame(11))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    task = FrameTask(0, "f.jpg", FrameRef(str(path)), digest,
                     CameraPosition(lat=49.1193, lon=6.1757, camera_id="cam-a"), None)
    library = Settings(model_path=s3_settings.model_path, intra_op_threads=1)
    # spawn: the worker starts from this process's environment, the test's credentials in it
    engine = LocalEngine(library, workers=1, photos_at=photo_location(s3_settings), start_method="spawn")
    try:
        [outcome] = list(engine.run([task]))
    finally:
        engine.close()
    assert outcome.error is None and outcome.photo_stored
    assert bucket_keys(s3_settings) == {f"city/{digest[:2]}/{digest}.jpg"}
