"""A real S3-compatible server (moto in server mode) on localhost, and the settings that reach it.
Used by the object-storage tests and by benchmarks/scale.py (needs `pip install "moto[server]"`).

Everything talks to it over HTTP exactly as to S3: Lance through its object store, the store's own
files through pyarrow's S3 filesystem. Nothing of embedstore is replaced.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

SETTINGS = {
    "AWS_ACCESS_KEY_ID": "embedstore-test",
    "AWS_SECRET_ACCESS_KEY": "embedstore-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BUCKET = "embedstore-test"


@contextmanager
def s3_server() -> Iterator[str]:
    """Start the server with one bucket, set the S3 settings in os.environ; yields the endpoint URL."""
    import boto3
    from moto import server as server_module

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_address[1]}"
    saved = {name: os.environ.get(name) for name in [*SETTINGS, "AWS_ENDPOINT_URL"]}
    os.environ.update(SETTINGS, AWS_ENDPOINT_URL=endpoint)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def new_prefix(name: str = "store") -> str:
    """A fresh store URI in the test bucket."""
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
