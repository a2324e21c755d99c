"""Channel pointers about to expire: the warning before pull-mode devices stop moving (issue 22, item 10).

A signed pointer (`edgefleet.channel/2`) expires; the scheduled `resign-channels` deployment renews it. That
schedule ships off (prefect.yaml) until its registry is configured, and a forgotten one lets every pointer
expire: pull-mode devices then refuse the channel and stay where they are. `edgefleet registry ls` warns about
every pointer expiring within N days (`--warn-within-days`, $EDGEFLEET_POINTER_WARN_DAYS) or already expired.
`expiring_pointers` is the pure decision; `registry_expiry_warnings` reads the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.device.registry.base import RegistryReader
from edgefleet.kernel.contracts.manifest import ChannelPointer

DEFAULT_WARN_WITHIN_DAYS = 3.0
SECONDS_PER_DAY = 86400.0
RESIGN_FIX = ("run the resign-channels deployment (`prefect deployment run resign-channels/resign-channels`) and "
              "turn its schedule on once its registry is set, or `edgefleet registry resign`")


@dataclass(frozen=True)
class ExpiryWarning:
    """One signed pointer that expires within the warning window (or has expired)."""

    model: str
    channel: str
    version: str
    expires_at: datetime
    days_left: float

    @property
    def expired(self) -> bool:
        return self.days_left <= 0

    def message(self) -> str:
        when = (f"expired {-self.days_left:.1f} day(s) ago" if self.expired
                else f"expires in {self.days_left:.1f} day(s)")
        return (f"channel {self.channel} of {self.model} (-> {self.version}) {when} "
                f"({self.expires_at.isoformat()}): pull-mode devices then stay where they are")


def expiring_pointers(pointers: Iterable[tuple[str, str, ChannelPointer]], now: datetime,
                      within: timedelta) -> list[ExpiryWarning]:
    """Pure: the signed pointers of (model, channel, pointer) expiring within `within` of `now`, soonest first."""
    warnings = [
        ExpiryWarning(model, channel, pointer.version, pointer.expires_at,
                      (pointer.expires_at - now).total_seconds() / SECONDS_PER_DAY)
        for model, channel, pointer in pointers
        if pointer.expires_at is not None and pointer.expires_at - now <= within
    ]
    return sorted(warnings, key=lambda warning: warning.expires_at)


def registry_expiry_warnings(registry: RegistryReader, now: datetime, within: timedelta) -> list[ExpiryWarning]:
    """Reads every channel pointer of the registry and returns those expiring within `within`."""
    found = []
    for model in registry.list_models():
        for channel in registry.list_channels(model):
            pointer = registry.read_channel(model, channel).pointer
            if pointer is not None:
                found.append((model, channel, pointer))
    return expiring_pointers(found, now, within)
