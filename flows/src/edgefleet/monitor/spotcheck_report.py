"""The labelled spot check of the devices shown (issue 25), read from the registry for `fleet status` (its lines
and `--json`'s `spot_check`) and the fleet page (`overview`). Reads: one listing of
`fleet/spotcheck-labels/`, then one record per device shown that has one; the maths is `monitor.spotcheck`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_LABELS_PREFIX
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.spotcheck import Interval, SpotCheckReport, SpotCheckResult, spot_check, version_spot_checks
from edgefleet.monitor.spotcheck_labels import read_labels

if TYPE_CHECKING:
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import DeviceStatus


def device_spot_checks(registry: RegistryReader, devices: Sequence[DeviceStatus]) -> list[SpotCheckResult]:
    """The spot check of each device shown that has labels on the model version it runs, with the bias of its
    estimated accuracy when it has one.

    Raises:
        EdgefleetError: the labels cannot be listed or a record read.
    """
    labelled = {key.rsplit("/", 1)[-1].removesuffix(".json") for key in registry.list_json(SPOTCHECK_LABELS_PREFIX)}
    results: list[SpotCheckResult] = []
    for device in devices:
        if device.device_id not in labelled or not device.model_name or not device.model_version:
            continue
        record = read_labels(registry, device.device_id)
        estimate = device.drift.accuracy if device.drift is not None else None
        estimated = (Interval(value=estimate.accuracy, low=estimate.low, high=estimate.high)
                     if estimate is not None else None)
        result = spot_check(device.device_id, device.model_name, device.model_version,
                            record.samples if record else (), estimated)
        if result is not None:
            results.append(result)
    return results


def spot_check_report(registry: RegistryReader, devices: Sequence[DeviceStatus]) -> SpotCheckReport:
    """The spot checks of `devices`, per device and pooled per model version; a registry that cannot be read is
    the report's `error` (the status is still shown)."""
    try:
        results = device_spot_checks(registry, devices)
    except EdgefleetError as error:
        return SpotCheckReport(registry=registry.uri, error=error.message)
    return SpotCheckReport(registry=registry.uri, devices=tuple(results), versions=version_spot_checks(results))


def labels_registry(settings: MonitorConfig) -> str | None:
    """The registry the labels are read from: `drift.registry`, default `identity.registry` (None: neither)."""
    return settings.drift.registry or settings.identity.registry


def _open_reader(uri: str) -> RegistryReader:
    from edgefleet.device.registry import open_registry_reader

    return open_registry_reader(uri)


def read_spot_check_report(settings: MonitorConfig, devices: Sequence[DeviceStatus],
                           open_reader: Callable[[str], RegistryReader] | None = None) -> SpotCheckReport | None:
    """`spot_check_report` of the configured registry; None when none is configured or no device is shown."""
    uri = labels_registry(settings)
    if uri is None or not devices:
        return None
    try:
        registry = (open_reader or _open_reader)(uri)
    except EdgefleetError as error:
        return SpotCheckReport(registry=uri, error=error.message)
    return spot_check_report(registry, devices)
