"""The pure decisions of a channel move (`edgefleet.flows.registry.moves`): no registry, no I/O."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet.flows.registry.moves import (
    Move,
    after_lost_swap,
    already_done,
    refuse_downgrade,
    resignable,
    settled_or_moved,
)
from edgefleet.flows.trust.pointer_readback import FORGED, UNSIGNED, VERIFIED, CheckedChannel
from edgefleet.flows.trust.pointer_signing import sign_pointer
from edgefleet.kernel.contracts.manifest import ChannelPointer
from edgefleet.kernel.contracts.rollout import RolloutStage
from edgefleet.kernel.errors import ConflictError, VerificationError

SHA_NEW = "a" * 64
SHA_OLD = "b" * 64
URI = "/srv/registry"
KEY = Ed25519PrivateKey.generate()


def signed(version: str, sha: str = SHA_NEW, *, rollout: RolloutStage | None = None, by: str | None = None):
    return sign_pointer(KEY, model="birds", channel="stable", version=version, manifest_sha256=sha, previous=None,
                        updated_by=by, rollout=rollout)


def unsigned(version: str, sha: str = SHA_NEW) -> ChannelPointer:
    return ChannelPointer(model="birds", channel="stable", version=version, manifest_sha256=sha)


def move(version: str = "2.0.0", *, is_signed: bool = True, downgrade: bool = False) -> Move:
    return Move("birds", version, "stable", SHA_NEW, signed=is_signed, downgrade=downgrade)


def test_a_pointer_naming_the_version_and_manifest_is_the_move_done() -> None:
    pointer = signed("2.0.0")
    assert already_done(pointer, move()) is pointer


@pytest.mark.parametrize("pointer", [None, signed("1.0.0"), signed("2.0.0", SHA_OLD), unsigned("2.0.0")],
                         ids=["absent", "other version", "other manifest", "unsigned for a signed move"])
def test_a_pointer_that_differs_in_anything_the_move_writes_is_not_the_move_done(pointer) -> None:
    assert already_done(pointer, move()) is None


def test_an_unsigned_pointer_is_an_unsigned_move_done() -> None:
    pointer = unsigned("2.0.0")
    assert already_done(pointer, move(is_signed=False)) is pointer


def test_a_staged_share_below_the_whole_fleet_is_not_the_promotion_done() -> None:
    stage = RolloutStage(id="r1", replaces="1.0.0", replaces_manifest_sha256=SHA_OLD, share_bp=5000)
    assert already_done(signed("2.0.0", rollout=stage), move()) is None
    full = signed("2.0.0", rollout=stage.model_copy(update={"share_bp": 10000}))
    assert already_done(full, move()) is full


def test_a_channel_not_at_the_expected_version_refuses_the_move_naming_who_moved_it() -> None:
    with pytest.raises(ConflictError) as error:
        settled_or_moved(move(), signed("1.5.0", by="alice"), "1.0.0", URI)
    assert "names 1.5.0 by alice, not 1.0.0" in error.value.message
    assert "promote 2.0.0 again" in error.value.fix


def test_a_channel_not_at_the_expected_version_but_at_the_move_is_done() -> None:
    pointer = signed("2.0.0")
    assert settled_or_moved(move(), pointer, "1.0.0", URI) is pointer


def test_a_lost_swap_retries_while_the_channel_still_names_the_baseline() -> None:
    assert after_lost_swap(move(), signed("1.0.0"), "1.0.0", URI) is None
    assert after_lost_swap(move(), None, None, URI) is None


def test_a_lost_swap_to_the_same_move_is_done_and_to_another_version_is_a_conflict() -> None:
    same = signed("2.0.0")
    assert after_lost_swap(move(), same, "1.0.0", URI) is same
    with pytest.raises(ConflictError, match="names 3.0.0, not 1.0.0"):
        after_lost_swap(move(), signed("3.0.0"), "1.0.0", URI)


def test_a_lower_version_is_refused_unless_it_is_a_deliberate_downgrade() -> None:
    with pytest.raises(ConflictError, match="names 3.0.0; 2.0.0 is lower") as error:
        refuse_downgrade(move(), signed("3.0.0"))
    assert "--downgrade" in error.value.fix
    refuse_downgrade(move(downgrade=True), signed("3.0.0"))
    refuse_downgrade(move(), signed("1.0.0"))
    refuse_downgrade(move(), None)


def test_an_unsigned_pointer_never_talks_a_signed_move_into_a_downgrade() -> None:
    refuse_downgrade(move(), unsigned("9.0.0"))  # anybody's: devices keep their own floor
    with pytest.raises(ConflictError):
        refuse_downgrade(move(is_signed=False), unsigned("9.0.0"))


def checked(trust: str, pointer: ChannelPointer | None) -> CheckedChannel:
    return CheckedChannel(model="birds", channel="stable", source=f"{URI}/stable.json", generation=7, trust=trust,
                          pointer=pointer, problem="does not verify" if trust == FORGED else "")


def test_only_a_verified_pointer_is_resignable() -> None:
    pointer = signed("2.0.0")
    assert resignable(checked(VERIFIED, pointer)) is pointer
    with pytest.raises(VerificationError, match="not signed") as error:
        resignable(checked(UNSIGNED, unsigned("2.0.0")))
    assert "convert-unsigned birds --channel stable" in error.value.fix
    with pytest.raises(VerificationError):
        resignable(checked(FORGED, pointer))

