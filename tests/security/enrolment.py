"""The enrolment path as the attack tests on it use it (issue 23, item 4): a real registry directory, tokens
minted with a real enrolment key, requests filed by the device's own code (`edgefleet.device.enrol`, the
create-only write a device has), approvals by `approve_requests`, and the monitor's real gate deciding whom it
trusts (`tests.security.device_keys.Fleet`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.device.enrol import EnrolFiled, file_request
from edgefleet.device.registry.local import LocalRegistryReader
from edgefleet.device.trust.device_identity import load_or_create_device_key
from edgefleet.flows.trust.enrolment_tokens import Approval, approve_requests, create_token
from edgefleet.kernel.contracts.enrolment import EnrolToken, TokenText
from tests.security.device_keys import Fleet

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Enrolment:
    """A fleet whose devices enrol by token: the operator, the devices (each its own root), the approver."""

    def __init__(self, fleet: Fleet, tmp_path: Path) -> None:
        self.fleet = fleet
        self.tmp_path = tmp_path
        self.device_view = LocalRegistryReader(fleet.registry.root)  # type: ignore[attr-defined]

    def mint(self, device_id: str, *, lifetime: timedelta = DAY, replace: bool = False,
             now: datetime = T0) -> tuple[TokenText, EnrolToken]:
        return create_token(self.fleet.registry, device_id, enrolment_key=self.fleet.enrolment, now=now,
                            lifetime=lifetime, by="test operator", replace=replace)

    def device_root(self, name: str) -> Path:
        return self.tmp_path / "devices" / name

    def device_key(self, name: str) -> Ed25519PrivateKey:
        return load_or_create_device_key(self.device_root(name))

    def file(self, name: str, device_id: str, token: TokenText | str, *, now: datetime = T0) -> EnrolFiled:
        """Device `name` (its own root and key) asks to be enrolled as `device_id` with `token`."""
        return file_request(self.device_view, self.device_root(name), device_id, str(token), now=now)

    def approve(self, *, now: datetime = T0 + timedelta(minutes=5)) -> list[Approval]:
        return approve_requests(self.fleet.registry, enrolment_key=self.fleet.enrolment, now=now)

    def request_path(self, filed: EnrolFiled) -> Path:
        return Path(filed.location)
