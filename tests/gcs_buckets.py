"""A fresh bucket on the GCS emulator for one test, deleted with its objects afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def temporary_bucket(client, name: str) -> Iterator[str]:
    """`client`: a `google.cloud.storage.Client` on the emulator; yields the bucket's name."""
    bucket = client.create_bucket(name)
    try:
        yield name
    finally:
        for blob in client.list_blobs(name):
            blob.delete()
        bucket.delete()
