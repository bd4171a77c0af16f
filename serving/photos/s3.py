"""The photo store in a bucket of an S3-compatible store, which several hosts can share.

``VIPARE_PHOTO_STORE=s3://bucket/prefix`` keeps photos as objects laid out as the folder store's files
(:mod:`serving.photos.store`): ``<prefix>/ab/<sha256>.<ext>``, held copies under ``<prefix>/.held/``,
unblurred originals under ``<prefix>/.originals/``. AWS S3, MinIO, Garage, Scaleway or OVH
(``VIPARE_S3_ENDPOINT_URL`` for those other than AWS) are reached through boto3 (the ``[s3]`` extra),
which takes credentials and region from the standard AWS environment variables and files
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``~/.aws/``).

Crash safety: a PUT is atomic (a reader sees the whole old object or the whole new one, never part of
one) and durable when it returns, so a photo is on the store before its report is committed without
temporary names, fsyncs or folder syncs; ``put(durable=False)`` is the same PUT, and
:meth:`S3PhotoStore.sync_file` has nothing left to do. Each PUT carries the MD5 of its body, which the
store checks. A crash between the PUT and the commit leaves an object no report refers to:
:meth:`S3PhotoStore.remove_orphans` lists the prefix and deletes those, sparing the objects younger
than the grace period (``VIPARE_ORPHAN_GRACE_S``) always, since the worker lock of one host does not
reach the writers of another (:attr:`S3PhotoStore.shared`). Only keys of that layout are ever deleted.

Failures of the store come back as ``OSError``: ``FileNotFoundError`` for a missing object,
``EACCES`` for a refused access (answered as a read-only disk), ``EIO`` for the rest.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from serving.config import S3_SCHEME
from serving.photos.backend import Kind
from serving.photos.metadata import clean_metadata
from serving.photos.store import HELD, MEDIA_TYPES, ORIGINALS, OWNER_FILE

__all__ = ["S3PhotoStore", "store_errors"]

POOL_CONNECTIONS = 32
"""HTTP connections each process keeps to the store: one per analysis slot and blurring thread at busy times
(botocore's default of 10 would make the threads queue for one)."""
CONNECT_TIMEOUT_S = 5.0
"""How long a connection to the store may take to open; botocore's default (60 s) would hold an agent's upload for
minutes when the store's host is down."""
READ_TIMEOUT_S = 20.0
"""How long the store may stay silent on an open connection before the request is tried again (botocore: 60 s)."""
ATTEMPTS = 3
"""Tries per request, the first included (botocore's standard retries): an unreachable store fails an operation after
at most ``ATTEMPTS`` times the timeouts, and the upload is answered 503 ``storage_unavailable``."""
_DELETE_BATCH = 1000
"""The most keys one DeleteObjects request takes (the S3 API's limit)."""
_ORPHAN_BATCH = 500
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_WRITTEN_FIRST = "PreconditionFailed"
"""The answer to a PUT with ``If-None-Match: *`` when the object exists."""
_DENIED = {"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_NAME = re.compile(r"(?P<sha256>[0-9a-f]{64})\.(?P<ext>[a-z0-9]+)")


class S3PhotoStore:
    """Photos as objects under a prefix of one bucket; a :class:`serving.photos.backend.PhotoBackend`.

    Args:
        client: a boto3 S3 client (thread-safe; each process makes its own).
        bucket: the bucket, which must exist.
        prefix: the keys' prefix, without a trailing slash; empty for the whole bucket.
    """

    shared = True
    """Other hosts may write to the bucket: the orphan sweep spares recent objects whatever the lock says."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.location = f"{S3_SCHEME}{bucket}/{self.prefix}"

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3PhotoStore:
        """The store at ``s3://bucket/prefix``, through a client boto3 configures from the AWS environment."""
        bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
        config = Config(
            max_pool_connections=POOL_CONNECTIONS, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
            retries={"mode": "standard", "max_attempts": ATTEMPTS},
        )
        return cls(boto3.client("s3", endpoint_url=endpoint_url, config=config), bucket, prefix)

    def key(self, sha256: str, ext: str, kind: Kind = "photo") -> str:
        """The object key of a copy of the photo."""
        folder = {"photo": sha256[:2], "held": HELD, "original": ORIGINALS}[kind]
        return f"{self.prefix}{folder}/{sha256}.{ext}"

    # -- writing

    def put(self, data: bytes, sha256: str, ext: str, *, durable: bool = True) -> bool:
        """Store a photo, with only the metadata display needs; False when the same bytes were there.

        Every PUT is durable when it returns: ``durable`` changes nothing here.
        """
        return self._write(self.key(sha256, ext), clean_metadata(data), ext)

    def hold(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an accepted photo, metadata removed, until its blurred copy is stored; False when held already."""
        return self._write(self.key(sha256, ext, "held"), clean_metadata(data), ext)

    def keep_original(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an upload's unblurred original (metadata removed); False when kept already."""
        return self._write(self.key(sha256, ext, "original"), clean_metadata(data), ext)

    def _write(self, key: str, content: bytes, ext: str) -> bool:
        md5 = hashlib.md5(content, usedforsecurity=False)
        if self._holds(key, content, md5.hexdigest()):
            return False
        with store_errors(key):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=content, ContentType=MEDIA_TYPES.get(ext, "application/octet-stream"),
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
        return True

    def _holds(self, key: str, content: bytes, md5: str) -> bool:
        """Whether the object ``key`` holds exactly ``content`` (False when there is none)."""
        head = self._head(key)
        if head is None or head["ContentLength"] != len(content):
            return False
        if head.get("ETag", "").strip('"') == md5:  # a single-part PUT's ETag, unless the store encrypts with KMS
            return True
        try:
            return self._get(key) == content
        except FileNotFoundError:
            return False

    def release(self, sha256: str, ext: str) -> None:
        """Drop a held photo (its blurred copy is stored, or no report needs it)."""
        self.delete(sha256, ext, "held")

    def delete(self, sha256: str, ext: str, kind: Kind = "photo") -> None:
        """Delete a copy; nothing when it is not there."""
        key = self.key(sha256, ext, kind)
        with store_errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def sync_file(self, sha256: str, ext: str) -> Path | None:
        """Nothing to do: the PUT that stored the photo returned once it was durable."""
        return None

    def sync_folder(self, folder: Path) -> None:
        """Nothing to do: a bucket has no folders to sync."""

    # -- reading

    def exists(self, sha256: str, ext: str, kind: Kind = "photo") -> bool:
        """Whether the object of this copy is there."""
        return self._head(self.key(sha256, ext, kind)) is not None

    def size(self, sha256: str, ext: str, kind: Kind = "photo") -> int | None:
        """The copy's size in bytes; None when it is not there."""
        head = self._head(self.key(sha256, ext, kind))
        return None if head is None else int(head["ContentLength"])

    def read(self, sha256: str, ext: str, kind: Kind = "photo") -> bytes:
        """The copy's bytes.

        Raises:
            FileNotFoundError: it is not there.
        """
        return self._get(self.key(sha256, ext, kind))

    def open(self, sha256: str, ext: str, kind: Kind = "photo") -> tuple[BinaryIO, int]:
        """The copy's body, streamed from the store as it is read, and its size.

        Raises:
            FileNotFoundError: it is not there.
        """
        key = self.key(sha256, ext, kind)
        with store_errors(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        return cast(BinaryIO, answer["Body"]), int(answer["ContentLength"])

    def local_path(self, sha256: str, ext: str, kind: Kind = "photo") -> Path | None:
        """None: a bucket's objects are no files of this machine."""
        return None

    def version(self, sha256: str, ext: str) -> str:
        """The stored object's ETag and time of writing.

        Raises:
            FileNotFoundError: it is not there.
        """
        key = self.key(sha256, ext)
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(errno.ENOENT, "no such photo in the store", f"{self.location}{key}")
        return f"{key}:{head.get('ETag', '')}:{head['LastModified'].isoformat()}:{head['ContentLength']}"

    def held(self) -> list[tuple[str, str, float]]:
        """The photos held for blurring: (sha256, extension, seconds since written), oldest first."""
        return self._listed(HELD)

    def originals(self) -> list[tuple[str, str, float]]:
        """The unblurred originals kept: (sha256, extension, seconds since written), oldest first."""
        return self._listed(ORIGINALS)

    def _listed(self, folder: str) -> list[tuple[str, str, float]]:
        now = time.time()
        found = sorted((modified, sha256, ext) for _key, sha256, ext, modified in self._objects(f"{folder}/"))
        return [(sha256, ext, now - modified) for modified, sha256, ext in found]

    def _objects(self, under: str = "") -> Iterator[tuple[str, str, str, float]]:
        """``(key, sha256, extension, written at)`` of the photo objects under ``prefix + under``, in key order.

        Keys of any other shape are not the store's, and never listed.
        """
        listed = self.prefix + under
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=listed)
        with store_errors(listed):
            for page in pages:
                for item in page.get("Contents", []):
                    folder, _, name = item["Key"].removeprefix(self.prefix).rpartition("/")
                    match = _NAME.fullmatch(name)
                    if match is None or folder not in (HELD, ORIGINALS, match["sha256"][:2]):
                        continue
                    yield item["Key"], match["sha256"], match["ext"], item["LastModified"].timestamp()

    def claim(self, database_uid: str) -> str:
        """The id of the database the photos belong to (:meth:`serving.photos.backend.PhotoBackend.claim`),
        in the object ``<prefix>.database``, written only when absent (``If-None-Match: *``)."""
        key = f"{self.prefix}{OWNER_FILE}"
        try:
            return self._get(key).decode("ascii").strip()
        except FileNotFoundError:
            pass
        with store_errors(key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=f"{database_uid}\n".encode(), IfNoneMatch="*")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != _WRITTEN_FIRST:
                    raise  # else another process recorded its own first
        return self._get(key).decode("ascii").strip()

    def remove_orphans(self, referenced: Callable[[Sequence[str]], set[str]], *, older_than_s: float = 0.0) -> int:
        """Delete the objects no report references (held copies and originals too), listed under the prefix.

        Args:
            referenced: given sha256 values, returns those some report references.
            older_than_s: keep objects written less than this many seconds ago.

        Returns:
            How many objects were deleted.
        """
        now, removed = time.time(), 0
        batch: list[tuple[str, str]] = []

        def flush() -> int:
            keep = referenced([sha256 for _key, sha256 in batch])
            gone = [key for key, sha256 in batch if sha256 not in keep]
            batch.clear()
            self._delete_keys(gone)
            return len(gone)

        for key, sha256, _ext, written in self._objects():
            if now - written < older_than_s:
                continue
            batch.append((key, sha256))
            if len(batch) >= _ORPHAN_BATCH:
                removed += flush()
        if batch:
            removed += flush()
        return removed

    def _delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            chunk = keys[start : start + _DELETE_BATCH]
            with store_errors(self.prefix):
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True}
                )
            failed = answer.get("Errors", [])
            if failed:
                first = failed[0]
                raise OSError(
                    errno.EIO, f"the store refused to delete {len(failed)} objects: {first.get('Message', '')}",
                    f"{self.location}{first.get('Key', '')}",
                )

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with store_errors(key):
                return cast(dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=key))
        except FileNotFoundError:
            return None

    def _get(self, key: str) -> bytes:
        with store_errors(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            return cast(bytes, answer["Body"].read())


@contextmanager
def store_errors(key: str) -> Iterator[None]:
    """Turns the store's errors into ``OSError`` (see the module doc), naming the object ``key``."""
    try:
        yield
    except ClientError as exc:
        raise _answered(exc, key) from exc
    except S3UploadFailedError as exc:  # upload_file's wrapping of the store's answer
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError):
            raise _answered(cause, key) from exc
        raise OSError(errno.EIO, "the photo store did not take the upload", key) from exc
    except BotoCoreError as exc:
        raise OSError(errno.EIO, f"cannot reach the photo store: {exc}", key) from exc


def _answered(exc: ClientError, key: str) -> OSError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    if code in _NOT_FOUND or (status == "404" and code != "NoSuchBucket"):
        return FileNotFoundError(errno.ENOENT, "no such object in the photo store", key)
    number = errno.EACCES if code in _DENIED or status == "403" else errno.EIO
    return OSError(number, f"the photo store answered {code}: {error.get('Message') or code}", key)
