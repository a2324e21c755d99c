"""Functions run in child processes by the concurrency tests (importable by multiprocessing's spawn)."""

from __future__ import annotations

from typing import Any

from edgefleet.flows.registry import open_registry_writer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.errors import ConflictError

BARRIER_TIMEOUT_S = 60


def set_channel_worker(
    registry_uri: str,
    model: str,
    channel: str,
    version: str,
    manifest_sha256: str,
    expected_generation: int,
    barrier: Any,
    results: Any,
) -> None:
    """Waits for the others, then tries one compare-and-swap; reports (version, "won" | "conflict")."""
    registry = open_registry_writer(registry_uri)
    pointer = ChannelPointer(
        model=model,
        channel=channel,
        version=version,
        manifest_sha256=manifest_sha256,
        updated_by=f"worker-{version}",
    )
    barrier.wait(BARRIER_TIMEOUT_S)
    try:
        registry.set_channel(model, channel, pointer, expected_generation)
    except ConflictError:
        results.put((version, "conflict"))
    else:
        results.put((version, "won"))


def promote_worker(
    registry_uri: str,
    model: str,
    channel: str,
    version: str,
    expected_version: str,
    barrier: Any,
    results: Any,
) -> None:
    """Waits for the others, then promotes `version` expecting the channel at `expected_version`."""
    registry = open_registry_writer(registry_uri)
    barrier.wait(BARRIER_TIMEOUT_S)
    try:
        # downgrade: some competitors are lower versions than the baseline; this test is about compare-and-swap
        registry.promote(model, version, channel, by=f"worker-{version}", expected_version=expected_version,
                         downgrade=True)
    except ConflictError:
        results.put((version, "conflict"))
    else:
        results.put((version, "won"))
