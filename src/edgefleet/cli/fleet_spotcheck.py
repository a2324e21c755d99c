"""The labelled spot check in `fleet status` (issue 25): per device shown that has labels, the accuracy on its
labelled sample beside the estimated one, and how far the estimate is off. `fleet status` calls
`print_spot_checks` once, after its table; the rest is here (reads: one listing of the labelled records, then one
record per device shown that has one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from edgefleet.kernel.errors import EdgefleetError

if TYPE_CHECKING:
    from edgefleet.device.registry.base import RegistryReader
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import DeviceStatus
    from edgefleet.monitor.spotcheck import SpotCheckResult

SPOT_CHECK_CAVEAT = ("Spot check: the accuracy on frames the device sampled blind to the model's answers and "
                     "people labelled (Wilson 95 % interval); 'estimate off by' is the estimated accuracy minus "
                     "it (positive: the estimate is too high). The two cover different frames of the version.")


def device_spot_checks(registry: RegistryReader, devices: Sequence[DeviceStatus]) -> list[SpotCheckResult]:
    """The spot check of each device shown that has labels on the version it runs, with the bias of its
    estimated accuracy when it has one."""
    from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_LABELS_PREFIX
    from edgefleet.monitor.spotcheck import Interval, spot_check
    from edgefleet.monitor.spotcheck_labels import read_labels

    labelled = {key.rsplit("/", 1)[-1].removesuffix(".json") for key in registry.list_json(SPOTCHECK_LABELS_PREFIX)}
    results: list[SpotCheckResult] = []
    for device in devices:
        if device.device_id not in labelled or not device.model_version:
            continue
        record = read_labels(registry, device.device_id)
        estimate = device.drift.accuracy if device.drift is not None else None
        estimated = (Interval(value=estimate.accuracy, low=estimate.low, high=estimate.high)
                     if estimate is not None else None)
        result = spot_check(device.device_id, device.model_version, record.samples if record else (), estimated)
        if result is not None:
            results.append(result)
    return results


def spot_check_text(result: SpotCheckResult) -> str:
    """'cam-1 1.0.0: labelled accuracy 0.82 (0.71-0.90) on 57 frames; estimate off by +0.05 (-0.04 to +0.15)'."""
    text = (f"{result.device_id} {result.model_version}: labelled accuracy {result.accuracy.text()} on "
            f"{result.labelled} frame(s)")
    return text + (f"; estimate off by {result.bias.text(signed=True)}" if result.bias is not None else "")


def print_spot_checks(console: Console, settings: MonitorConfig, devices: Sequence[DeviceStatus]) -> None:
    """The spot-check lines of `fleet status` (nothing when no registry is configured or nothing is labelled)."""
    uri = settings.drift.registry or settings.identity.registry
    if uri is None or not devices:
        return
    from edgefleet.device.registry import open_registry_reader

    try:
        results = device_spot_checks(open_registry_reader(uri), devices)
    except EdgefleetError as error:
        console.print(f"spot check labels not read from {uri}: {error.message}", highlight=False, soft_wrap=True)
        return
    if results:
        console.print(SPOT_CHECK_CAVEAT, highlight=False, soft_wrap=True)
    for result in results:
        console.print(f"spot check {spot_check_text(result)}", highlight=False, soft_wrap=True)
