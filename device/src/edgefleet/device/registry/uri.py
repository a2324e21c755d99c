"""Registry URIs: the one parser, and the one way a device (or any reader) opens a registry.

    location = parse_registry_uri("gs://my-bucket/edgefleet")     # GcsLocation(bucket=..., prefix=...)
    registry = open_registry_reader("~/.edgefleet/registry")        # a LocalRegistryReader

The pipelines open the writer on the same parser: `edgefleet.flows.registry.open_registry_writer`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, ConfigDict

from edgefleet.kernel.errors import RegistryError

if TYPE_CHECKING:
    from edgefleet.device.registry.base import RegistryOptions, RegistryReader

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"


class LocalLocation(BaseModel):
    """A registry in a directory (`~` and environment variables expanded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local"] = "local"
    path: Path


class GcsLocation(BaseModel):
    """A registry in a GCS bucket, under `prefix` ("" for the bucket root)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["gcs"] = "gcs"
    bucket: str
    prefix: str = ""


RegistryLocation = Union[LocalLocation, GcsLocation]


def parse_registry_uri(uri: str | os.PathLike[str]) -> RegistryLocation:
    """Where a registry URI points: `gs://bucket[/prefix]`, `file:///abs/dir`, or a directory path.

    Raises:
        RegistryError: an unsupported scheme.
    """
    text = os.fspath(uri)
    if text.startswith(GCS_SCHEME):
        bucket, _, prefix = text[len(GCS_SCHEME) :].partition("/")
        return GcsLocation(bucket=bucket, prefix=prefix.strip("/"))
    if text.startswith(FILE_SCHEME):
        text = text[len(FILE_SCHEME) :]
    elif "://" in text:
        raise RegistryError(
            f"registry URI {text!r} has an unsupported scheme",
            "use gs://BUCKET[/PREFIX] or a local directory (path or file:///path)",
        )
    return LocalLocation(path=Path(os.path.expandvars(text)).expanduser())


def open_registry_reader(
    uri: str | os.PathLike[str], *, client: Any = None, options: RegistryOptions | None = None,
    credentials_file: Path | None = None,
) -> RegistryReader:
    """Opens the registry at `uri` for reading (what a device does; it never writes a registry).

    Args:
        uri: `gs://bucket[/prefix]`, `file:///abs/dir`, or a directory path.
        client: GCS only: a `google.cloud.storage.Client` to use.
        options: timeouts and retry counts.
        credentials_file: GCS only: the device's Google credentials (agent config `credentials_file`).

    Raises:
        RegistryError: unsupported scheme or invalid bucket name.
    """
    location = parse_registry_uri(uri)
    if isinstance(location, GcsLocation):
        from edgefleet.device.registry.gcs import GcsRegistryReader

        return GcsRegistryReader(location.bucket, location.prefix, client=client, options=options,
                                 credentials_file=credentials_file)
    from edgefleet.device.registry.local import LocalRegistryReader

    return LocalRegistryReader(location.path, options=options)
