"""The scheduled `promote-canary` flow: `canary` -> `stable` once the canary devices ran it healthily long enough.

Run on a cron schedule (prefect.yaml). Each run decides from the fleet monitor's state:

- the version `from_channel` names is not already what `to_channel` names;
- every canary device (inventory target) reports, is not stale, runs that version, and has run it for at
  least `healthy_for_s`;
- over that time, together: at least the gate's `min_promotion_inferences`;
- the canary judge passes it (`judge_promotion`): the canary devices' change since they took the version
  against the `stable` devices' change over the same windows, with the rollout's judge and thresholds
  (`judge`, one gate: errors, swap failures, latency, class mix and scores all count).

Then `to_channel` is moved with compare-and-swap (a concurrent change is not overridden). Otherwise the run
does nothing and its result (and log, and a markdown artifact) says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict

from edgefleet.flows.fleet.inventory import load_inventory
from edgefleet.flows.registry import RegistryWriter, open_registry_writer
from edgefleet.flows.registry.channels import verified_pointed_manifest
from edgefleet.flows.registry.staged import partly_staged
from edgefleet.flows.rollout.judgement import MonitorCollector, WaveSubject, look, most_common
from edgefleet.flows.rollout.params import PromotionParams
from edgefleet.flows.rollout.verdict import Verdict
from edgefleet.flows.trust.pointer_readback import ABSENT, VERIFIED, untrusted_error
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.layout import version_sort_key
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import SHARE_BP_FULL
from edgefleet.kernel.errors import ConfigError
from edgefleet.kernel.trust.signatures import PublicKeyLike

FLOW_NAME = "promote-canary"
REPLACED_MANIFEST_FIX = ("release versions are immutable: find out who changed the registry object, put the release's "
                         "own manifest back (or publish a new version), then promote again")


class PromotionResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    promoted: bool
    model: str
    version: str | None
    from_channel: str
    to_channel: str
    reason: str
    devices: tuple[str, ...] = ()


def promotion_blocker(params: PromotionParams, version: str, device_ids: list[str], now: datetime) -> str | None:
    """Why `version` may not be promoted yet (None: it may), from the fleet monitor's state."""
    from edgefleet.monitor import FleetStateError, device_history, load_monitor_config, open_fleet_store, version_health

    config = load_monitor_config(Path(params.monitor_config))
    if config.retention_s < params.healthy_for_s:
        raise ConfigError(f"the fleet monitor keeps {config.retention_s:.0f} s of history, less than the "
                          f"promotion's healthy_for_s {params.healthy_for_s:.0f} s",
                          "raise retention_s in the monitor config, or lower healthy_for_s")
    try:
        store = open_fleet_store(config, create=False)
    except FleetStateError as error:
        return f"no fleet monitor state: {error.message}"
    with store:
        for device_id in device_ids:
            try:
                history = device_history(store, device_id, params.stale_after_s, now, event_limit=1)
            except FleetStateError:
                return f"canary device {device_id} has never reported to the fleet monitor"
            status = history.status
            if status.status == "stale":
                return f"canary device {device_id} is stale ({status.reason})"
            if status.model_version != version:
                return f"canary device {device_id} runs {status.model_version}, not {version}"
            stretch = [entry for entry in history.versions if entry.model_version == version]
            running_for = (now - stretch[-1].first_seen).total_seconds() if stretch else 0.0
            if running_for < params.healthy_for_s:
                return (f"canary device {device_id} has run {version} for {running_for:.0f} s of the required "
                        f"{params.healthy_for_s:.0f} s")
        health = version_health(store, device_ids, params.model, version, now - timedelta(seconds=params.healthy_for_s))
    if health.inferences < params.judge.min_promotion_inferences:
        return (f"only {health.inferences} of the required {params.judge.min_promotion_inferences} inferences on "
                f"{version} (judge.min_promotion_inferences)")
    return None


def staged_promotion_blocker(source: ChannelPointer, target: ChannelPointer | None) -> str | None:
    """Why a promotion must wait for a staged rollout (pure): the source names its version for a share of the
    fleet only (or a halted rollout), or the target holds a staged rollout still in progress, which a plain
    pointer would end at 100 % unjudged. None: nothing staged in the way."""
    if source.rollout is not None and source.rollout.share_bp < SHARE_BP_FULL:
        staged = partly_staged(source) or (f"channel {source.channel} holds halted rollout {source.rollout.id} "
                                           f"(0 %: every device on {source.rollout.replaces})")
        return f"{staged}; finish it (edgefleet rollout pull) before promoting"
    staged = partly_staged(target)
    if staged is not None:
        return (f"{staged}; finish or halt it first (edgefleet rollout pull), or promote by hand "
                "(edgefleet registry promote)")
    return None


def promotion_pointers(registry: RegistryWriter, model: str, from_channel: str, to_channel: str,
                       public_key: PublicKeyLike) -> tuple[ChannelPointer | None, ChannelPointer | None]:
    """(from, to) pointers as the promotion may use them: the source verified, the target verified or unsigned
    (the transition; promoting signs over it); None when absent.

    Raises:
        VerificationError: the source is not a verified pointer, or the target is forged or invalid.
    """
    source = registry.read_channel_checked(model, from_channel, public_key)
    target = registry.read_channel_checked(model, to_channel, public_key)
    if source.trust not in (ABSENT, VERIFIED):
        raise untrusted_error(source, f"promoting from {from_channel}")
    if target.untrusted:
        raise untrusted_error(target, f"promoting to {to_channel}")
    return source.verified, target.pointer


# --- the judged part: the same judge as a rollout's waves -------------------------------------------------
def promotion_subject(params: PromotionParams, registry: RegistryWriter, source: ChannelPointer,
                      public_key: PublicKeyLike, canary_ids: list[str], stable_ids: list[str],
                      now: datetime) -> WaveSubject | None:
    """The promotion as a wave: the canary devices since they took the version `source` (the verified pointer of
    `from_channel`) names, against the version they ran before it, with the other (stable) devices on that version
    as controls. None: no history to judge.

    Raises:
        VerificationError: the registry's manifest of the version is not the one the pointer names, or does not
            verify against `public_key` (its reference, task and labels steer the judge).
    """
    from edgefleet.monitor import FleetStateError, device_history, load_monitor_config, open_fleet_store

    version = source.version
    config = load_monitor_config(Path(params.monitor_config))
    starts, befores = [], []
    with open_fleet_store(config, create=False) as store:
        for device_id in canary_ids:
            try:
                stretches = [e for e in device_history(store, device_id, params.stale_after_s, now,
                                                       event_limit=1).versions if e.model_name == params.model]
            except FleetStateError:
                return None
            mine = [i for i, entry in enumerate(stretches) if entry.model_version == version]
            if mine:
                starts.append(stretches[mine[-1]].first_seen)
                befores.append(stretches[mine[-1] - 1].model_version if mine[-1] > 0 else None)
    if not starts:
        return None
    manifest = verified_pointed_manifest(registry, source, public_key, fix=REPLACED_MANIFEST_FIX,
                                         source=f"{params.model}/{params.from_channel} ({version})").manifest
    return WaveSubject(model=params.model, version=version, devices=tuple(canary_ids), before=most_common(befores),
                       activated_at=min(starts), others=tuple(stable_ids),
                       reference=manifest.reference.distributions if manifest.reference else None,
                       detector=manifest.task == "detection", label_count=manifest.label_count)


def judge_promotion(params: PromotionParams, registry: RegistryWriter, source: ChannelPointer,
                    public_key: PublicKeyLike, canary_ids: list[str], stable_ids: list[str],
                    now: datetime) -> tuple[str | None, Verdict | None]:
    """(why not to promote, or None; the verdict) by the canary judge with the promotion's `judge` gate."""
    subject = promotion_subject(params, registry, source, public_key, canary_ids, stable_ids, now)
    if subject is None:
        return f"no history of {source.version} on the canary devices to judge", None
    verdict = look(subject, params.judge, MonitorCollector(params.monitor_config), final=False)
    if verdict.result == "pass":
        return None, verdict
    what = "is still waiting for data" if verdict.result == "wait" else "failed it"
    return f"the canary judge {what} (control {verdict.control}): {verdict.reason}", verdict


def promote_signed(registry: RegistryWriter, model: str, version: str, channel: str, signing: SigningParams, *,
                   by: str, downgrade: bool = False, **kwargs: Any) -> ChannelPointer:
    """`registry.promote` with a pointer signed by the release key (every channel move signs).

    `downgrade=True` marks the pointer as a deliberate downgrade only when `version` is lower than what the
    channel names (so a normal move is never marked)."""
    key = channel_signing_key(signing, registry.uri)
    before = registry.read_channel_checked(model, channel, key.public_key()).pointer
    lower = before is not None and version_sort_key(version) < version_sort_key(before.version)
    return registry.promote(model, version, channel, by=by, signing_key=key, downgrade=downgrade and lower,
                            validity=signing.validity, **kwargs)


@flow(name=FLOW_NAME)
def promote_canary(params: PromotionParams) -> PromotionResult:
    """Promotes `from_channel` to `to_channel` when the canary devices were healthy long enough (see module doc)."""
    logger = get_run_logger()
    registry = open_registry_writer(params.registry)
    release_key = channel_signing_key(params.signing, registry.uri).public_key()
    source, target = promotion_pointers(registry, params.model, params.from_channel, params.to_channel, release_key)
    devices = [device.id for device in load_inventory(params.inventory).select(params.canary.ids, params.canary.tags)]

    def finish(promoted: bool, reason: str, version: str | None) -> PromotionResult:
        (logger.info if promoted else logger.warning)("%s", reason)
        create_markdown_artifact(markdown=f"**promote-canary** {params.model}: {reason}",
                                 key=f"promote-{params.model.replace('.', '-').replace('_', '-')}")
        return PromotionResult(promoted=promoted, model=params.model, version=version, from_channel=params.from_channel,
                               to_channel=params.to_channel, reason=reason, devices=tuple(devices))

    if source is None:
        return finish(False, f"nothing to promote: channel {params.from_channel} does not exist", None)
    version = source.version
    if (staged := staged_promotion_blocker(source, target)) is not None:
        return finish(False, f"not promoting {version} to {params.to_channel}: {staged}", version)
    if (target is not None and target.signed and target.version == version
            and target.manifest_sha256 == source.manifest_sha256):
        return finish(False, f"nothing to do: {params.to_channel} already names {version}", version)
    now = datetime.now(UTC)
    blocker = promotion_blocker(params, version, devices, now)
    if blocker is None:
        stable = [device.id for device in load_inventory(params.inventory).devices if device.id not in devices]
        blocker, _ = judge_promotion(params, registry, source, release_key, devices, stable, now)
    if blocker is not None:
        return finish(False, f"not promoting {version} to {params.to_channel}: {blocker}", version)
    promote_signed(registry, params.model, version, params.to_channel, params.signing,
                   by=f"{FLOW_NAME} ({params.from_channel})", expected_version=target.version if target else None)
    return finish(True, f"promoted {version} from {params.from_channel} to {params.to_channel}: canary devices "
                        f"{', '.join(devices)} healthy for {params.healthy_for_s:.0f} s", version)
