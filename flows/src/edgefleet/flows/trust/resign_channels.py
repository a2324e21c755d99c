"""The scheduled `resign-channels` flow: re-sign channel pointers well before they expire.

A signed channel pointer (`edgefleet.channel/2`) expires (default 14 days), so a registry frozen by an
attacker is noticed by the devices. This flow, on a daily schedule (prefect.yaml), re-signs every pointer
that verifies and expires within `renew_within_days`. Re-signing keeps version, manifest and downgrade flag,
raises the counter and moves the expiry; a pointer or manifest that does not verify is never re-signed, and
an unsigned (schema 1) pointer is reported, never signed (it may be anybody's: converting one is the explicit
`edgefleet registry convert-unsigned`, `edgefleet.flows.trust.convert_unsigned`). One channel's problem, whatever it
is, is reported for that channel and the others are still renewed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgefleet.flows.registry import RegistryWriter, open_registry_writer
from edgefleet.flows.trust.pointer_readback import ABSENT, UNSIGNED, untrusted_error
from edgefleet.flows.trust.release_key import channel_signing_key
from edgefleet.flows.trust.signing_params import SigningParams
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.names import ChannelName, ModelName
from edgefleet.kernel.errors import EdgefleetError

log = logging.getLogger(__name__)

FLOW_NAME = "resign-channels"

Outcome = Literal["resigned", "fresh", "skipped_unsigned", "failed"]


class ResignParams(BaseModel):
    """What to re-sign, with which key, for how long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str = Field(description="gs://BUCKET[/PREFIX] or a registry directory")
    models: tuple[ModelName, ...] | None = Field(default=None, description="default: every model")
    renew_within_days: float = Field(default=7.0, ge=0, description="re-sign pointers expiring within this")
    convert_unsigned: Literal[False] = Field(
        default=False,
        description="no longer supported (always false): re-signing never converts an unsigned pointer; "
        "convert one explicitly with `edgefleet registry convert-unsigned` after checking what it names",
    )
    signing: SigningParams = SigningParams()

    @field_validator("convert_unsigned", mode="before")
    @classmethod
    def _never_converts(cls, value: object) -> object:
        if value:
            raise ValueError(
                "convert_unsigned is no longer supported: re-signing never signs an unsigned pointer (it may be "
                "anybody's); convert one explicitly with `edgefleet registry convert-unsigned MODEL --channel "
                "CHANNEL`, which shows what it signs, and remove convert_unsigned from the deployment"
            )
        return value


class ResignResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelName
    channel: ChannelName
    outcome: Outcome
    detail: str = ""


def needs_resign(pointer: ChannelPointer, now: datetime, renew_within: timedelta | None) -> bool:
    """Pure: whether a verified signed `pointer` is due (expiring within `renew_within`; None: always). An
    unsigned pointer is never due: re-signing does not convert."""
    if not pointer.signed:
        return False
    if renew_within is None or pointer.expires_at is None:
        return True
    return pointer.expires_at - now <= renew_within


def resign_channels(
    registry: RegistryWriter,
    signing_key: Ed25519PrivateKey,
    *,
    models: list[str] | None = None,
    channels: list[str] | None = None,
    validity: timedelta,
    renew_within: timedelta | None = None,
    now: datetime | None = None,
) -> list[ResignResult]:
    """Re-signs the due, verified channel pointers of `models` (default all); one failure does not stop the
    others."""
    run = _Resigning(registry, signing_key, validity, renew_within, now or datetime.now(UTC))
    return [run.one(model, channel)
            for model in models or registry.list_models()
            for channel in channels or registry.list_channels(model)]


@dataclass(frozen=True)
class _Resigning:
    """One re-signing run: what every channel of it shares."""

    registry: RegistryWriter
    signing_key: Ed25519PrivateKey
    validity: timedelta
    renew_within: timedelta | None
    now: datetime

    def one(self, model: str, channel: str) -> ResignResult:
        """One channel; whatever goes wrong is this channel's result, never the end of the run."""
        try:
            return self._judge_and_resign(model, channel)
        except EdgefleetError as error:
            return ResignResult(model=model, channel=channel, outcome="failed", detail=error.message)
        except Exception as error:  # noqa: BLE001 - one bad channel must not stop the others: reported, run goes on
            log.exception("re-signing %s/%s failed unexpectedly", model, channel)
            return ResignResult(model=model, channel=channel, outcome="failed",
                                detail=f"unexpected {type(error).__name__}: {error}")

    def _judge_and_resign(self, model: str, channel: str) -> ResignResult:
        checked = self.registry.read_channel_checked(model, channel, self.signing_key.public_key())
        if checked.trust == ABSENT:
            return ResignResult(model=model, channel=channel, outcome="failed", detail="the channel does not exist")
        if checked.trust == UNSIGNED:
            return ResignResult(
                model=model, channel=channel, outcome="skipped_unsigned",
                detail=f"unsigned (schema 1), not re-signed: it may be anybody's; after checking what it names, "
                f"convert it with `edgefleet registry convert-unsigned {model} --channel {channel}` or promote "
                "the version it should name",
            )
        pointer = checked.verified
        if pointer is None:
            raise untrusted_error(checked, "re-signing")
        if not needs_resign(pointer, self.now, self.renew_within):
            expires = pointer.expires_at.isoformat() if pointer.expires_at else "-"
            return ResignResult(model=model, channel=channel, outcome="fresh", detail=f"expires {expires}")
        new = self.registry.resign_channel(model, channel, self.signing_key, validity=self.validity, by=FLOW_NAME)
        expires = new.expires_at.isoformat() if new.expires_at else "-"
        return ResignResult(model=model, channel=channel, outcome="resigned",
                            detail=f"{new.version}, counter {new.counter}, expires {expires}")


@task(name="resign-channels-of-registry", cache_policy=NO_CACHE)
def resign_registry(params: ResignParams) -> list[ResignResult]:
    """The one side effect: re-sign the due pointers (the key is loaded here, never passed around)."""
    registry = open_registry_writer(params.registry)
    key = channel_signing_key(params.signing, registry.uri)
    return resign_channels(
        registry,
        key,
        models=list(params.models) if params.models else None,
        validity=params.signing.validity,
        renew_within=timedelta(days=params.renew_within_days),
    )


@flow(name=FLOW_NAME)
def resign_channels_flow(params: ResignParams) -> list[ResignResult]:
    """Re-signs channel pointers that expire soon (see the module doc); fails when any could not be re-signed."""
    logger = get_run_logger()
    if params.renew_within_days >= params.signing.pointer_validity_days:
        logger.warning("renew_within_days >= pointer_validity_days: every run re-signs every pointer")
    results = resign_registry(params)
    for result in results:
        level = {"failed": logger.error, "skipped_unsigned": logger.warning}.get(result.outcome, logger.info)
        level("%s/%s: %s %s", result.model, result.channel, result.outcome, result.detail)
    failed = [f"{r.model}/{r.channel}: {r.detail}" for r in results if r.outcome == "failed"]
    if failed:
        raise EdgefleetError(
            f"{len(failed)} channel pointer(s) could not be re-signed: {'; '.join(failed)}",
            "they expire on schedule and devices then stay where they are: fix the named problem (a pointer "
            "or manifest that does not verify means the registry was changed by hand) and run again",
        )
    return results
