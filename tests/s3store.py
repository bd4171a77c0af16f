"""An S3 endpoint for the tests of the S3 photo store: moto's server on 127.0.0.1, in a thread, offline.

:func:`s3_endpoint` starts it with fake credentials in the environment (and the AWS files pointed
away from the user's own), so that boto3 clients of the test process, the service's included, sign
their requests without reaching anything else; :func:`new_bucket` makes a bucket per test. Callers
skip when boto3 or moto's server are not installed (``pip install -e '.[dev]'`` brings both).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["FAKE_AWS_ENV", "new_bucket", "s3_client", "s3_endpoint"]

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
"""What boto3 reads in the tests instead of real credentials and files."""

_buckets = itertools.count(1)


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """Run moto's S3 server on a free port of 127.0.0.1 with :data:`FAKE_AWS_ENV` set; yields its URL."""
    pytest.importorskip("boto3", reason="the S3 photo store needs boto3 (pip install -e '.[dev]' or '.[s3]')")
    server_module = pytest.importorskip(
        "moto.server", reason="the S3 tests run moto's server (pip install 'moto[server]', part of '.[dev]')"
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the endpoint, for a test to look at the bucket itself."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def new_bucket(endpoint: str) -> str:
    """Create a bucket of its own on the endpoint; returns its name."""
    name = f"photos-{next(_buckets)}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name
