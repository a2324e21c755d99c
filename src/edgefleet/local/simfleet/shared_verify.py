"""One signature check per distinct signed pointer for all the simulated devices of a process.

Every simulated device runs the agent's own pointer decision (`behaviour.decide_poll`), which verifies the
pointer's Ed25519 signature at every poll, as the agent does. A real fleet spreads those checks over
10,000 CPUs; one simulator process would spend most of its core on them (2,000 polls/s at 10,000 devices
and a 5 s poll: about 0.1-0.2 ms each, measured in `bench.fleet_sim_bench`'s README row). The release keys
handed to the devices here remember the outcome of each (signature, signed bytes) they checked, so the
devices share it: the same bytes and signature give the same outcome, so no decision changes; a pointer
with other bytes or another signature is checked anew (altered pointers are still refused).
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet.kernel.trust.release_keyring import Keyring

REMEMBERED_CHECKS = 64
"""Distinct (signature, bytes) outcomes kept per key: the pointers of a few rollouts."""


class SharedCheckKey(Ed25519PublicKey):
    """An Ed25519 public key that remembers the outcome of the last `REMEMBERED_CHECKS` signatures it checked."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self.key = key
        self.outcomes: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
        self.checked = 0
        """Signatures really checked (the rest were remembered)."""

    def verify(self, signature: bytes, data: bytes) -> None:
        entry = (bytes(signature), bytes(data))
        valid = self.outcomes.get(entry)
        if valid is None:
            self.checked += 1
            try:
                self.key.verify(signature, data)
                valid = True
            except InvalidSignature:
                valid = False
            self.outcomes[entry] = valid
            if len(self.outcomes) > REMEMBERED_CHECKS:
                self.outcomes.popitem(last=False)
        else:
            self.outcomes.move_to_end(entry)
        if not valid:
            raise InvalidSignature

    def public_bytes(self, encoding: serialization.Encoding, format: serialization.PublicFormat) -> bytes:  # noqa: A002
        return self.key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self.key.public_bytes_raw()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SharedCheckKey) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key.public_bytes_raw())

    def __copy__(self) -> SharedCheckKey:
        return self

    def __deepcopy__(self, memo: dict) -> SharedCheckKey:
        return self


def shared_checks(keyring: Keyring) -> Keyring:
    """`keyring` with each key a `SharedCheckKey` (same ids, source and problems)."""
    return Keyring(tuple((full, SharedCheckKey(key)) for full, key in keyring.keys), keyring.source,
                   keyring.problems)
