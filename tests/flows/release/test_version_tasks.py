"""The version a release publishes when none is given."""

from __future__ import annotations

from edgefleet.flows.release.version_tasks import next_version


def test_next_version() -> None:
    assert next_version([]) == "1.0.0"
    assert next_version(["1.0.0", "1.10.0", "1.9.3"]) == "1.10.1"
