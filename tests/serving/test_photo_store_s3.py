"""The photo store in an S3 bucket (:mod:`serving.photos.s3`), against moto's S3 server on 127.0.0.1.

The store alone (writes, reads, held copies, originals, the orphan sweep), then the service with
``photo_store=s3://...``: uploads stored and served from the bucket, the blurred copy replacing the
held one, erasure and retention deleting objects, the start-up sweep, and two services with a data
folder each sharing one bucket and one database. Skipped without boto3 or moto's server.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import pickle
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving.config import ServiceSettings, UnsafeConfigurationError
from serving.models import Report, utcnow
from serving.photos.annotated import ANNOTATED_CACHE
from serving.photos.backend import PhotoBackend
from serving.photos.location import PhotoLocation, open_photos, photo_location
from serving.photos.store import OWNER_FILE, PhotoStore
from serving.retention import purge
from tests.imagegen import make_photo, pattern_array
from tests.s3store import new_bucket, s3_client, s3_endpoint
from tests.serving.helpers import Server, deposit_photo, moved, server_at
from tests.serving.test_serving_blur_later import REGIONS, _is_blurred
from tests.serving.test_serving_privacy import FixedRegions, _photo, _sharpness
from vipare.detection import Detector

LYON = (45.7640, 4.8357)
_seed = itertools.count(91_000)
_places = itertools.count(1)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_endpoint() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str) -> str:
    return new_bucket(endpoint)


@pytest.fixture
def store(endpoint: str, bucket: str) -> Any:
    from serving.photos.s3 import S3PhotoStore

    return S3PhotoStore.from_url(f"s3://{bucket}/city", endpoint_url=endpoint)


@pytest.fixture(params=["folder", "bucket"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> PhotoBackend:
    """Each store, for what they both promise (:class:`serving.photos.backend.PhotoBackend`)."""
    if request.param == "folder":
        return PhotoStore(tmp_path / "photos")
    store: PhotoBackend = request.getfixturevalue("store")
    return store


def keys(endpoint: str, bucket: str, *, owner: bool = False) -> list[str]:
    """The bucket's keys: its photos' copies, and with ``owner`` the object naming the store's database."""
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in listed if owner or not item["Key"].endswith(f"/{OWNER_FILE}"))


def jpeg(seed: int) -> bytes:
    """A small JPEG of its own (seeded noise)."""
    return make_photo("JPEG", array=pattern_array((32, 24), "noise", seed=seed))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# The store alone


def test_a_photo_is_put_once_under_the_folder_layout_and_read_back(store: Any, endpoint: str, bucket: str) -> None:
    data = jpeg(1)
    digest = sha(data)
    assert store.put(data, digest, "jpg", durable=False)
    assert not store.put(data, digest, "jpg")  # the same bytes: already there
    assert keys(endpoint, bucket) == [f"city/{digest[:2]}/{digest}.jpg"]
    assert store.exists(digest, "jpg") and not store.exists(digest, "jpg", "held")
    assert store.read(digest, "jpg") == data and store.size(digest, "jpg") == len(data)
    stream, size = store.open(digest, "jpg")
    with stream:
        assert stream.read() == data and size == len(data)
    assert store.local_path(digest, "jpg") is None and store.sync_file(digest, "jpg") is None
    head = s3_client(endpoint).head_object(Bucket=bucket, Key=f"city/{digest[:2]}/{digest}.jpg")
    assert head["ContentType"] == "image/jpeg"


def test_other_bytes_under_the_same_name_are_written_again_with_a_new_version(backend: PhotoBackend) -> None:
    data = jpeg(2)
    digest = sha(data)
    assert backend.put(data, digest, "jpg") and not backend.put(data, digest, "jpg")
    before = backend.version(digest, "jpg")
    time.sleep(0.01)  # a file's modification time, in ns, or an object's time of writing: another moment
    assert backend.put(jpeg(3), digest, "jpg")  # a blurred copy, or a torn one replaced
    assert backend.read(digest, "jpg") == jpeg(3) and backend.size(digest, "jpg") == len(jpeg(3))
    assert backend.version(digest, "jpg") != before
    stream, size = backend.open(digest, "jpg")
    with stream:
        assert stream.read() == jpeg(3) and size == len(jpeg(3))
    backend.delete(digest, "jpg")
    assert not backend.exists(digest, "jpg")


def test_missing_copies_read_as_missing_files(backend: PhotoBackend) -> None:
    digest = "ab" * 32
    assert not backend.exists(digest, "jpg") and backend.size(digest, "jpg") is None
    for kind in ("photo", "held", "original"):
        with pytest.raises(FileNotFoundError):
            backend.read(digest, "jpg", kind)
        with pytest.raises(FileNotFoundError):
            backend.open(digest, "jpg", kind)
    with pytest.raises(FileNotFoundError):
        backend.version(digest, "jpg")
    backend.delete(digest, "jpg")  # nothing to delete: no error
    backend.release(digest, "jpg")


def test_a_bucket_without_boto3_installed_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "serving.photos.s3", None)  # as if boto3 were missing
    with pytest.raises(UnsafeConfigurationError, match=r"pip install 'vipare\[s3\]'"):
        PhotoLocation("s3://bucket/photos").open()


def test_held_copies_and_originals_are_listed_oldest_first_and_dropped(store: Any, endpoint: str, bucket: str) -> None:
    first, second = jpeg(4), jpeg(5)
    assert store.hold(first, sha(first), "jpg") and not store.hold(first, sha(first), "jpg")
    store.hold(second, sha(second), "jpg")
    assert store.keep_original(first, sha(first), "jpg")
    held = store.held()
    assert {(s, e) for s, e, _ in held} == {(sha(first), "jpg"), (sha(second), "jpg")}
    assert all(0 <= age < 60 for _, _, age in held)
    assert [(s, e) for s, e, _ in store.originals()] == [(sha(first), "jpg")]
    assert store.read(sha(first), "jpg", "held") == first
    assert f"city/.held/{sha(first)}.jpg" in keys(endpoint, bucket)
    store.release(sha(first), "jpg")
    store.delete(sha(first), "jpg", "original")
    assert [s for s, _, _ in store.held()] == [sha(second)] and store.originals() == []


def test_the_orphan_sweep_lists_the_prefix_and_deletes_only_unreferenced_copies_of_its_layout(
    store: Any, endpoint: str, bucket: str
) -> None:
    kept, orphan, held_orphan = jpeg(6), jpeg(7), jpeg(8)
    store.put(kept, sha(kept), "jpg")
    store.put(orphan, sha(orphan), "jpg")
    store.hold(held_orphan, sha(held_orphan), "jpg")
    client = s3_client(endpoint)
    client.put_object(Bucket=bucket, Key="city/notes.txt", Body=b"not a photo")
    client.put_object(Bucket=bucket, Key="elsewhere/ab/" + "ab" * 32 + ".jpg", Body=b"another prefix")
    asked: list[str] = []

    def referenced(shas: Any) -> set[str]:
        asked.extend(shas)
        return {sha(kept)} & set(shas)

    assert store.remove_orphans(referenced, older_than_s=3600) == 0  # all too recent
    assert store.remove_orphans(referenced) == 2
    assert sorted(asked) == sorted([sha(kept), sha(orphan), sha(held_orphan)])
    assert keys(endpoint, bucket) == sorted(
        ["city/notes.txt", f"city/{sha(kept)[:2]}/{sha(kept)}.jpg", "elsewhere/ab/" + "ab" * 32 + ".jpg"]
    )


def test_a_missing_bucket_is_an_error_of_the_store_not_a_missing_photo(endpoint: str) -> None:
    from serving.photos.s3 import S3PhotoStore

    store = S3PhotoStore.from_url("s3://no-such-bucket/p", endpoint_url=endpoint)
    with pytest.raises(OSError) as raised:
        store.put(jpeg(9), sha(jpeg(9)), "jpg")
    assert not isinstance(raised.value, FileNotFoundError) and "NoSuchBucket" in str(raised.value)


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint on 127.0.0.1 that accepts connections and never answers (a hung store)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_a_store_that_never_answers_fails_after_its_tries_instead_of_hanging(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``endpoint``: moto's server, for the fake credentials it puts in the environment; the store is another."""
    from serving.photos import s3

    monkeypatch.setattr(s3, "READ_TIMEOUT_S", 0.5)
    with silent_endpoint() as silent:
        store = s3.S3PhotoStore.from_url("s3://photos/city", endpoint_url=silent)
        start = time.monotonic()
        with pytest.raises(OSError, match="cannot reach the photo store") as refused:
            store.put(jpeg(1), sha(jpeg(1)), "jpg")
        took = time.monotonic() - start
    assert refused.value.errno == errno.EIO
    # three tries of 0.5 s each, and the standard retries' short back-off between them; not botocore's 3 x 60 s
    assert s3.ATTEMPTS * 0.5 <= took < 15, took


def test_the_bucket_records_the_first_database_that_claims_it(store: Any, endpoint: str, bucket: str) -> None:
    from serving.photos.s3 import S3PhotoStore

    assert store.claim("a" * 32) == "a" * 32
    assert keys(endpoint, bucket, owner=True) == [f"city/{OWNER_FILE}"]
    assert store.claim("b" * 32) == "a" * 32  # another database is told whose store it is
    assert S3PhotoStore.from_url(f"s3://{bucket}/other", endpoint_url=endpoint).claim("b" * 32) == "b" * 32


def test_a_database_that_loses_the_race_to_claim_the_bucket_is_told_the_winner(
    store: Any, endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = store._get
    reads: list[str] = []

    def written_meanwhile(key: str) -> bytes:
        reads.append(key)
        if len(reads) == 1:  # not there yet when read; another process writes its own before this one's PUT
            s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=b"a" * 32 + b"\n")
            raise FileNotFoundError(errno.ENOENT, "no such object in the photo store", key)
        return read(key)

    monkeypatch.setattr(store, "_get", written_meanwhile)
    assert store.claim("b" * 32) == "a" * 32
    assert reads == [f"city/{OWNER_FILE}"] * 2
    assert s3_client(endpoint).get_object(Bucket=bucket, Key=reads[0])["Body"].read() == b"a" * 32 + b"\n"


def test_a_service_of_another_database_refuses_the_bucket(tmp_path: Path, detector: Detector, endpoint: str,
                                                          bucket: str) -> None:
    with s3_server(tmp_path / "one", detector, endpoint, bucket) as server:
        report = sent(server)
    refused = pytest.raises(UnsafeConfigurationError, match="holds the photos of another vipare database")
    with refused, s3_server(tmp_path / "two", detector, endpoint, bucket):
        pass
    assert photo_key(report) in keys(endpoint, bucket)  # nothing swept


def test_settings_name_the_bucket_and_its_location_travels_to_worker_processes(endpoint: str, bucket: str) -> None:
    settings = ServiceSettings(photo_store=f"s3://{bucket}/city/", s3_endpoint_url=endpoint + "/")
    location = photo_location(settings)
    assert location == PhotoLocation(f"s3://{bucket}/city", endpoint)
    opened = pickle.loads(pickle.dumps(location)).open()
    assert opened.location == f"s3://{bucket}/city/" and opened.shared
    assert open_photos(ServiceSettings(data_dir=Path("/tmp/unused"))).shared is False
    for wrong in ("s3://", "/srv/photos", "gs://bucket"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            ServiceSettings(photo_store=wrong)


# --------------------------------------------------------------------------------------------------
# The service on a bucket


def s3_server(data_dir: Path, detector: Detector, endpoint: str, bucket: str, **overrides: Any) -> Any:
    return server_at(data_dir, detector, photo_store=f"s3://{bucket}/photos", s3_endpoint_url=endpoint, **overrides)


@pytest.fixture
def service(tmp_path: Path, detector: Detector, endpoint: str, bucket: str) -> Iterator[Server]:
    with s3_server(tmp_path / "data", detector, endpoint, bucket, photo_retention_days=30) as running:
        yield running


def sent(server: Server, photo: bytes | None = None) -> dict[str, Any]:
    lat, lon = moved(*LYON, north_m=500.0 * next(_places))
    response = server.upload(photo or deposit_photo(next(_seed)), lat=lat, lon=lon, accuracy_m=5)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def photo_key(report: dict[str, Any]) -> str:
    digest = report["image"]["sha256"]
    return f"photos/{digest[:2]}/{digest}.jpg"


def test_an_upload_is_stored_in_the_bucket_and_served_from_it(
    service: Server, endpoint: str, bucket: str, tmp_path: Path
) -> None:
    report = sent(service)
    assert keys(endpoint, bucket) == [photo_key(report)]  # the held copy gave way to the blurred one
    assert not (tmp_path / "data" / "photos").exists()
    stored = s3_client(endpoint).get_object(Bucket=bucket, Key=photo_key(report))["Body"].read()
    image = service.client.get(f"/v1/reports/{report['id']}/image", headers=service.headers("manager"))
    assert image.status_code == 200, image.text
    assert image.content == stored
    assert image.headers["content-type"] == "image/jpeg" and image.headers["content-length"] == str(len(stored))
    assert service.client.get(f"/v1/reports/{report['id']}/image").status_code == 401  # the key is still asked for
    for drawn in ("image/annotated", "thumbnail"):
        answer = service.client.get(f"/v1/reports/{report['id']}/{drawn}", headers=service.headers("manager"))
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"


def test_a_held_photo_in_the_bucket_is_blurred_when_read_and_its_held_copy_dropped(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vipare.pipeline.PrivacyDetector.from_settings", lambda *a, **k: FixedRegions(REGIONS))
    with s3_server(tmp_path / "data", detector, endpoint, bucket) as server:
        service = server.service

        def lost(*args: Any) -> None:  # the process died before blurring: the held copy stays
            service.in_flight.finish(args[-3])  # (..., dumping, sha256, ext, every_deposit)

        monkeypatch.setattr("serving.reports.upload.blur_later", lost)
        photo = _photo(31, 45.75, 4.85)
        report = server.upload(photo).json()
        digest = report["image"]["sha256"]
        assert keys(endpoint, bucket) == [f"photos/.held/{digest}.jpg"]
        answer = server.client.get(f"/v1/reports/{report['id']}/image", headers=server.headers("manager"))
        assert answer.status_code == 200, answer.text
        assert _is_blurred(answer.content, photo)
        assert keys(endpoint, bucket) == [photo_key(report)]


def test_erasure_and_retention_delete_the_objects(service: Server, endpoint: str, bucket: str) -> None:
    erased, expired, kept = sent(service), sent(service), sent(service)
    assert service.client.post(f"/v1/reports/{erased['id']}/erase", headers=service.headers("admin")).status_code == 200
    assert photo_key(erased) not in keys(endpoint, bucket)
    answer = service.client.post(
        f"/v1/incidents/{expired['incident']['id']}/transitions", json={"to": "cleaned"},
        headers=service.headers("manager"),
    )
    assert answer.status_code == 201, answer.text
    done = purge(
        service.service.sessions, service.service.photos, retention_days=30, now=utcnow() + timedelta(days=31),
        annotated_cache=service.data_dir / ANNOTATED_CACHE,
    )
    assert done.files == 1 and done.bytes > 0
    assert keys(endpoint, bucket) == [photo_key(kept)]
    gone = service.client.get(f"/v1/reports/{expired['id']}/image", headers=service.headers("manager"))
    assert gone.status_code == 410


def test_originals_are_kept_in_the_bucket_and_streamed_to_privacy_officers(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vipare.pipeline.PrivacyDetector.from_settings", lambda *a, **k: FixedRegions(REGIONS))
    with s3_server(tmp_path / "data", detector, endpoint, bucket, keep_originals_days=7) as server:
        photo = _photo(32, 45.76, 4.86)
        report = server.upload(photo).json()
        digest = report["image"]["sha256"]
        assert f"photos/.originals/{digest}.jpg" in keys(endpoint, bucket)
        answer = server.client.get(
            f"/v1/reports/{report['id']}/original", params={"reason": "police request about a van"},
            headers=server.headers("privacy_officer"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        assert _sharpness(answer.content) > 0.5 * _sharpness(photo)


def test_the_start_up_sweep_deletes_old_orphans_of_the_bucket_and_spares_recent_ones(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str
) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    with s3_server(tmp_path / "a", detector, endpoint, bucket, database_url=database) as first:
        report = sent(first)
    orphan = jpeg(10)
    from serving.photos.s3 import S3PhotoStore

    S3PhotoStore.from_url(f"s3://{bucket}/photos", endpoint_url=endpoint).put(orphan, sha(orphan), "jpg")
    orphan_key = f"photos/{sha(orphan)[:2]}/{sha(orphan)}.jpg"
    # A fresh data folder is swept once; alone on this host, but others may write to the bucket: grace kept.
    with s3_server(tmp_path / "b", detector, endpoint, bucket, database_url=database, orphan_grace_s=3600):
        assert orphan_key in keys(endpoint, bucket)
    with s3_server(tmp_path / "c", detector, endpoint, bucket, database_url=database, orphan_grace_s=0):
        assert keys(endpoint, bucket) == [photo_key(report)]


@contextmanager
def two_hosts(tmp_path: Path, detector: Detector, endpoint: str, bucket: str) -> Iterator[tuple[Server, Server]]:
    """Two services with a data folder each (two hosts), one database and one bucket."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    with (
        s3_server(tmp_path / "a", detector, endpoint, bucket, database_url=database) as first,
        s3_server(tmp_path / "b", detector, endpoint, bucket, database_url=database) as second,
    ):
        yield first, second


def test_two_services_with_their_own_data_folders_share_one_bucket(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str
) -> None:
    with two_hosts(tmp_path, detector, endpoint, bucket) as (first, second):
        one, other = sent(first), sent(second)
        for report in (one, other):
            for server in (first, second):
                answer = server.client.get(f"/v1/reports/{report['id']}/image", headers=server.headers("manager"))
                assert answer.status_code == 200, answer.text
                assert hashlib.sha256(answer.content).hexdigest() == sha(
                    s3_client(endpoint).get_object(Bucket=bucket, Key=photo_key(report))["Body"].read()
                )
        assert sorted(keys(endpoint, bucket)) == sorted([photo_key(one), photo_key(other)])



def test_an_upload_the_bucket_refuses_is_answered_clearly_and_stores_nothing(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str
) -> None:
    """The bucket gone (deleted, or a store that refuses): the agent is told to try later, no report is written."""
    with s3_server(tmp_path / "data", detector, endpoint, bucket) as server:
        sent(server)
        client = s3_client(endpoint)
        for key in keys(endpoint, bucket, owner=True):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)
        with server.service.sessions() as session:
            before = session.scalar(select(func.count()).select_from(Report))
        lat, lon = moved(*LYON, north_m=500.0 * next(_places))
        response = server.upload(deposit_photo(next(_seed)), lat=lat, lon=lon, accuracy_m=5)
        assert response.status_code == 503 and response.json()["code"] == "storage_unavailable", response.text
        assert "nothing was stored" in response.json()["detail"] and response.headers["retry-after"] == "60"
        with server.service.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Report)) == before


# --------------------------------------------------------------------------------------------------
# A store that refuses access (moto's IAM checks on: keys and policies are enforced)

# Reads by pattern: moto up to 5.2.5 checks a HEAD against s3:GetObject and a listing against s3:ListBucket,
# as AWS does; 5.2.6 checks them as s3:HeadObject and s3:ListObjectsV2.
READ_ONLY_POLICY = """{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:Get*", "s3:Head*", "s3:List*"], "Resource": "*"},
    {"Effect": "Deny", "Action": ["s3:Put*", "s3:Delete*"], "Resource": "*"}]}"""


def read_only_keys(endpoint: str) -> dict[str, str]:
    """An IAM user of moto's server allowed to read the store's objects, refused writes: its access key."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint)
    name = f"reader-{next(_places)}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="read-only", PolicyDocument=READ_ONLY_POLICY)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


@contextmanager
def access_checked() -> Iterator[None]:
    """Moto's server (a thread of this process) checks each request's key and policy while inside.

    Moto checks them once it has served ``settings.INITIAL_NO_AUTH_ACTION_COUNT`` requests (infinite by default).
    """
    from moto import settings

    try:
        from moto.core.authorization import ActionAuthenticatorMixin
    except ImportError:  # older moto releases kept it beside the responses
        from moto.core.responses import ActionAuthenticatorMixin  # type: ignore[no-redef,attr-defined]

    before = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = 0, 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = before


def test_a_key_refused_writes_reads_but_its_writes_fail_as_refused_access(
    store: Any, endpoint: str, bucket: str
) -> None:
    import boto3

    from serving.photos.s3 import S3PhotoStore

    kept, refused = jpeg(11), jpeg(12)
    store.put(kept, sha(kept), "jpg")
    reader = S3PhotoStore(boto3.client("s3", endpoint_url=endpoint, **read_only_keys(endpoint)), bucket, "city")
    with access_checked():
        assert reader.read(sha(kept), "jpg") == kept and reader.exists(sha(kept), "jpg")
        for write in (lambda: reader.put(refused, sha(refused), "jpg"), lambda: reader.delete(sha(kept), "jpg")):
            with pytest.raises(OSError, match="AccessDenied") as raised:
                write()
            assert raised.value.errno == errno.EACCES and not isinstance(raised.value, FileNotFoundError)
        unknown_key = pytest.raises(OSError, match="InvalidAccessKeyId|SignatureDoesNotMatch")
        with unknown_key as unknown:  # the store's own key, "testing", is no IAM user's
            store.read(sha(kept), "jpg")
        assert unknown.value.errno == errno.EACCES
    assert keys(endpoint, bucket) == [f"city/{sha(kept)[:2]}/{sha(kept)}.jpg"]  # nothing written, nothing deleted


def test_an_upload_while_the_store_refuses_the_services_key_is_answered_clearly_and_stores_nothing(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str
) -> None:
    """The service's key revoked or its policy changed: the agent is told to try later, no report, no object."""
    with s3_server(tmp_path / "data", detector, endpoint, bucket) as server:
        first = sent(server)
        stored = server.client.get(f"/v1/reports/{first['id']}/image", headers=server.headers("manager"))
        assert stored.status_code == 200, stored.text  # blurred and stored: nothing of the service's goes on
        with server.service.sessions() as session:
            before = session.scalar(select(func.count()).select_from(Report))
        with access_checked():
            lat, lon = moved(*LYON, north_m=500.0 * next(_places))
            response = server.upload(deposit_photo(next(_seed)), lat=lat, lon=lon, accuracy_m=5)
            reader = TestClient(server.app, raise_server_exceptions=False)  # the running app, as a real client sees it
            image = reader.get(f"/v1/reports/{first['id']}/image", headers=server.headers("manager"))
        assert response.status_code == 503 and response.json()["code"] == "storage_read_only", response.text
        detail = response.json()["detail"]
        assert "nothing was stored" in detail and "VIPARE_PHOTO_STORE" in detail, detail
        assert response.headers["retry-after"] == "60"
        assert image.status_code == 503 and image.json()["code"] == "storage_unreadable", image.text
        assert "VIPARE_PHOTO_STORE" in image.json()["detail"] and image.headers["retry-after"] == "60"
        again = server.client.get(f"/v1/reports/{first['id']}/image", headers=server.headers("manager"))
        assert again.status_code == 200  # the key accepted again: the same photo is served
        with server.service.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Report)) == before
        assert keys(endpoint, bucket) == [photo_key(first)]


def test_an_export_job_started_through_one_host_is_followed_and_downloaded_through_another(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str
) -> None:
    """Two hosts behind one address: each has its own data folder; the job lives beside the photos in the bucket."""
    with two_hosts(tmp_path, detector, endpoint, bucket) as (first, second):
        sent(first), sent(second)
        started = first.client.post("/v1/exports/jobs", headers=first.headers("manager"))
        assert started.status_code == 202, started.text
        job = started.json()
        deadline = time.monotonic() + 60
        while job["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
            job = second.client.get(job["status_url"], headers=second.headers("manager")).json()
        assert job["status"] == "done" and job["incidents"] == 2, job
        assert f"photos/.exports/{job['id']}.csv" in keys(endpoint, bucket)
        assert not list((tmp_path / "a").rglob(f"{job['id']}.csv*"))  # nothing left on the first host's disk
        file = second.client.get(job["file_url"], headers=second.headers("manager"))
        assert file.status_code == 200, file.text
        assert file.headers["content-type"].startswith("text/csv")
        assert "attachment" in file.headers["content-disposition"]
        assert len(file.content) == job["size_bytes"] == int(file.headers["content-length"])
        streamed = first.client.get("/v1/exports/incidents.csv", headers=first.headers("manager"))
        assert file.content == streamed.content and file.content.count(b"\r\n") == 3
        assert first.service.photos.remove_orphans(lambda shas: set()) == 2  # the sweep takes photos, not exports
        assert f"photos/.exports/{job['id']}.csv" in keys(endpoint, bucket)
        jobs = second.service.exports  # expired: deleted from the bucket by the next job, whichever host starts it
        stored = jobs.get(job["id"])
        assert stored is not None
        jobs._save(dataclasses.replace(stored, finished_at=utcnow() - jobs.keep - timedelta(minutes=1)))
        assert second.client.post("/v1/exports/jobs", headers=second.headers("manager")).status_code == 202
        assert jobs.get(job["id"]) is None
        assert not [key for key in keys(endpoint, bucket) if job["id"] in key]


def test_an_export_job_the_bucket_refuses_to_keep_fails_with_why_and_leaves_nothing_behind(
    tmp_path: Path, detector: Detector, endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server(tmp_path / "data", detector, endpoint, bucket) as server:
        report = sent(server)  # its photo read back: blurred and stored, nothing else of the service's goes on
        image = server.client.get(f"/v1/reports/{report['id']}/image", headers=server.headers("manager"))
        assert image.status_code == 200, image.text
        jobs = server.service.exports
        files = jobs.files
        publish = files.publish
        published = threading.Event()

        def refused(*args: Any) -> int:  # the bucket's policy changed while the file was written
            try:
                with access_checked():  # every request to the store refused meanwhile: the test's too
                    return publish(*args)
            finally:
                published.set()

        monkeypatch.setattr(files, "publish", refused)
        started = server.client.post("/v1/exports/jobs", headers=server.headers("manager"))
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        assert published.wait(60)
        deadline = time.monotonic() + 60
        while (job := jobs.get(job_id)) is not None and job.status == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = server.client.get(f"/v1/exports/jobs/{job_id}", headers=server.headers("manager")).json()
        assert answer["status"] == "failed" and "photo store answered InvalidAccessKeyId" in answer["error"], answer
        assert ".part" not in answer["error"] and answer["file_url"] is None
        assert not list((tmp_path / "data").rglob("*.part"))
        assert [key for key in keys(endpoint, bucket) if ".exports/" in key] == [f"photos/.exports/{job_id}.json"]
        with access_checked():  # the service's key refused: following the job says so, as any read
            reader = TestClient(server.app, raise_server_exceptions=False)
            followed = reader.get(f"/v1/exports/jobs/{job_id}", headers=server.headers("manager"))
        assert followed.status_code == 503 and followed.json()["code"] == "storage_unreadable", followed.text


def test_a_job_file_sent_to_the_bucket_keeps_its_job_alive_while_it_goes_up(
    store: Any, endpoint: str, bucket: str, tmp_path: Path
) -> None:
    from serving.export_jobs import BucketJobFiles

    files = BucketJobFiles(store.client, bucket, store.prefix, tmp_path)
    part = tmp_path / "job.csv.part"
    content = b"id,lat,lon\r\n" * 800_000  # 9.6 MB: sent in parts
    part.write_bytes(content)
    beats: list[float] = []
    assert files.publish(part, "c" * 32, "csv", lambda: beats.append(time.monotonic())) == len(content)
    assert beats and not part.exists()
    stream, size = files.open("c" * 32, "csv")
    with stream:
        assert size == len(content) and stream.read() == content
    files.write_meta("c" * 32, "{}")
    assert files.job_ids() == ["c" * 32] and files.read_meta("c" * 32) == "{}"
    files.delete("c" * 32, "csv")
    assert files.job_ids() == [] and files.read_meta("c" * 32) is None
    assert keys(endpoint, bucket) == []
