"""Finding 16: private key files readable by group or others were accepted without a word, and `verify`
ignored extra sub-folders in a version directory. Both are refused now."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.device.trust.version_bundle import verify_version_dir
from edgefleet.kernel.errors import VerificationError
from edgefleet.kernel.trust.signatures import load_private_key
from tests.device.store_fixtures import Keys, VersionFactory


def test_a_world_readable_signing_key_is_refused(keys: Keys) -> None:
    keys.private_file.chmod(0o644)
    with pytest.raises(VerificationError, match="group or others"):
        load_private_key(keys.private_file)
    keys.private_file.chmod(0o600)
    assert load_private_key(keys.private_file)


def test_an_extra_folder_in_a_version_directory_fails_verification(make_version: VersionFactory, keys: Keys) -> None:
    directory: Path = make_version("birds", "1.0.0")
    (directory / "payload").mkdir()
    (directory / "payload" / "run.sh").write_text("#!/bin/sh\n")
    with pytest.raises(VerificationError, match="sub-folder"):
        verify_version_dir(directory, keys.public_file)
