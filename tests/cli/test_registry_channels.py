"""`edgefleet registry promote`'s pure parts: reading `--expect`, the line it prints."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.cli.registry_channels import expected_version, promotion_line
from edgefleet.flows.trust.pointer_readback import FORGED, CheckedChannel
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer

KEY = Ed25519PrivateKey.generate()


def pointer(version: str, *, signed: bool = True) -> ChannelPointer:
    if not signed:
        return ChannelPointer(model="birds", channel="stable", version=version, manifest_sha256="a" * 64)
    return sign_pointer(KEY, model="birds", channel="stable", version=version, manifest_sha256="a" * 64,
                        previous=None)


def test_the_cli_reads_expect_none_as_a_channel_that_must_not_exist_and_no_expect_as_any() -> None:
    assert expected_version(None) is ...
    assert expected_version("None") is None
    assert expected_version("1.2.0") == "1.2.0"


def test_the_cli_says_a_replaced_forged_pointer_was_replaced() -> None:
    forged = CheckedChannel(model="birds", channel="stable", source="/srv/registry/stable.json", generation=3,
                            trust=FORGED, pointer=pointer("9.0.0"), problem="does not verify")
    line = promotion_line(forged, pointer("2.0.0"))
    assert line.startswith("birds channel stable: a pointer that does not verify (replaced) -> 2.0.0 (manifest aaaa")
    assert "signed, counter" in line
    assert promotion_line(None, pointer("2.0.0", signed=False)).endswith("UNSIGNED)")
