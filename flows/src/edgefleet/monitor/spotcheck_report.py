"""The labelled spot check of the devices shown (issue 25), read from the registry for `fleet status` (its lines
and `--json`'s `spot_check`) and the fleet page (`overview`). Reads: one listing of
`fleet/spotcheck-labels/`, then one record per device shown that has one, and one small read per signing key
in them (`fleet/revoked/<key id>.json`); the maths is `monitor.spotcheck`.

A labelled frame counts only while the device key that signed its sample is not revoked (`counted`): the
record keeps that key id per frame (`LabelledSample.key_id`), and a key revoked after the import (a signed
`fleet/revoked/<key id>.json`, or the monitor config's `identity.revoked_keys`) takes its frames out of the
labelled accuracy. A frame recorded without the key id (imported before the record carried it) does not count
either: it cannot be told from a revoked key's (import the same labels file again to record it). The frames
left out are counted in the result (`not_counted`) and said where it is shown."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.spotcheck import SPOTCHECK_LABELS_PREFIX, LabelledSample
from edgefleet.kernel.errors import EdgefleetError
from edgefleet.monitor.device_key_reader import KeyRecordPolicy, revoked_in_registry
from edgefleet.monitor.spotcheck import Interval, SpotCheckReport, SpotCheckResult, spot_check, version_spot_checks
from edgefleet.monitor.spotcheck_labels import read_labels

if TYPE_CHECKING:
    from edgefleet.monitor.config import MonitorConfig
    from edgefleet.monitor.query import DeviceStatus


class RevokedKeys:
    """Which signing keys are revoked: the policy's own (`identity.revoked_keys`) and the registry's signed
    revocations, each key id read once."""

    def __init__(self, registry: RegistryReader, policy: KeyRecordPolicy) -> None:
        self.registry, self.policy = registry, policy
        self._known: dict[str, bool] = {}

    def __call__(self, signing_key: str) -> bool:
        if signing_key not in self._known:
            self._known[signing_key] = (signing_key in self.policy.revoked_keys
                                        or revoked_in_registry(self.registry, self.policy, signing_key))
        return self._known[signing_key]


def counted(samples: Iterable[LabelledSample],
            revoked: Callable[[str], bool]) -> tuple[list[LabelledSample], list[LabelledSample]]:
    """(the labelled frames that count, those left out): a frame counts when it names the key that signed its
    sample and that key is not `revoked`."""
    kept: list[LabelledSample] = []
    left_out: list[LabelledSample] = []
    for sample in samples:
        (kept if sample.key_id is not None and not revoked(sample.key_id) else left_out).append(sample)
    return kept, left_out


def device_spot_checks(registry: RegistryReader, devices: Sequence[DeviceStatus],
                       policy: KeyRecordPolicy) -> list[SpotCheckResult]:
    """The spot check of each device shown that has labels on the model version it runs (only the frames that
    count: `counted`), with the bias of its estimated accuracy when it has one.

    Raises:
        EdgefleetError: the labels cannot be listed or a record read.
    """
    labelled = {key.rsplit("/", 1)[-1].removesuffix(".json") for key in registry.list_json(SPOTCHECK_LABELS_PREFIX)}
    revoked = RevokedKeys(registry, policy)
    results: list[SpotCheckResult] = []
    for device in devices:
        if device.device_id not in labelled or not device.model_name or not device.model_version:
            continue
        record = read_labels(registry, device.device_id)
        version = (device.model_name, device.model_version)
        kept, left_out = counted((sample for sample in (record.samples if record else ())
                                  if (sample.model, sample.model_version) == version), revoked)
        estimate = device.drift.accuracy if device.drift is not None else None
        estimated = (Interval(value=estimate.accuracy, low=estimate.low, high=estimate.high)
                     if estimate is not None else None)
        result = spot_check(device.device_id, device.model_name, device.model_version, kept, estimated)
        if result is not None:
            results.append(result.model_copy(update={"not_counted": len(left_out)}))
    return results


def spot_check_report(registry: RegistryReader, devices: Sequence[DeviceStatus],
                      policy: KeyRecordPolicy) -> SpotCheckReport:
    """The spot checks of `devices`, per device and pooled per model version, counting only the frames of keys
    `policy` (and the registry's signed revocations) does not revoke; a registry that cannot be read is the
    report's `error` (the status is still shown)."""
    try:
        results = device_spot_checks(registry, devices, policy)
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
        policy = revocation_policy(settings)
        registry = (open_reader or _open_reader)(uri)
    except EdgefleetError as error:
        return SpotCheckReport(registry=uri, error=error.message)
    return spot_check_report(registry, devices, policy)


def revocation_policy(settings: MonitorConfig) -> KeyRecordPolicy:
    """What tells a revoked device key: the monitor's `identity.enrolment_keys` (they sign the registry's
    revocations) and `identity.revoked_keys`.

    Raises:
        ConfigError: no enrolment key (a revocation in the registry could not be told from a forged one, so no
            label can be counted), or a key file is unusable.
    """
    from edgefleet.kernel.errors import ConfigError
    from edgefleet.monitor.telemetry_verifier import key_record_policy

    if not settings.identity.enrolment_keys:
        raise ConfigError("the spot check labels are not counted: the monitor config has no identity.enrolment_keys, "
                          "so a revoked device key (fleet/revoked/) cannot be told and its labels would still count",
                          "list the fleet enrolment public key file(s) in identity.enrolment_keys (e.g. "
                          "~/.edgefleet/keys/fleet-enrolment.key.pub)")
    return key_record_policy(settings.identity)
