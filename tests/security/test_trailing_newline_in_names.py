"""Finding 12: name and version patterns used `$`, which also matches before a trailing newline, so
"birds\\n" or "1.0.0\\n" passed as a model name or version (and went into paths, keys and commands). Every
such pattern is now a full match."""

from __future__ import annotations

import pytest

from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.layout import check_name, check_version, is_version
from edgefleet.kernel.errors import RegistryError


@pytest.mark.parametrize("name", ["birds\n", "birds\r\n", "\nbirds"])
def test_a_name_with_a_newline_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        check_name("model", name)


def test_a_version_with_a_trailing_newline_is_refused(local_registry: LocalRegistryWriter) -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        check_version("1.0.0\n")
    assert not is_version("1.0.0\n")
    with pytest.raises(RegistryError):
        local_registry.read_manifest("birds", "1.0.0\n")
    with pytest.raises(RegistryError):
        local_registry.read_channel("birds\n", "stable")
