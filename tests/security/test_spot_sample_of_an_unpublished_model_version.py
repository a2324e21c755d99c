"""A device signs its own samples, so a compromised device (or a bug) can sign a sample naming a model version
the registry never published, or a model or version that is not a name at all (control characters that would
reach the operator's terminal, a path). Such a sample is refused, named, never offered, never imported: labels
of a version nobody released would only waste the labellers' time."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.kernel.contracts.spotcheck import labels_key
from tests.spot_samples import EnrolledFleet, offered, spot_sample

FRAME, OTHER = "20261207T210000Z-000000000001", "20261207T210000Z-000000000002"


def test_a_signed_sample_of_a_version_the_registry_never_published_is_refused(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    image = b"a frame"
    unknown = spot_sample("cam-1", FRAME, image).model_copy(update={"model_version": "9.9.9"})
    fleet.plant("cam-1", FRAME, fleet.signed("cam-1", unknown), image)
    fleet.upload("cam-1", OTHER, b"a frame of the published version")
    result = fleet.cli("pending")
    assert result.exit_code == 0, result.output
    assert offered(result) == [("cam-1", OTHER)]
    assert f"REFUSED {fleet.root}/spotcheck/cam-1/{FRAME}.json: model birds has no published version 9.9.9" \
        in result.output
    imported = fleet.cli("import", fleet.labels_file([("cam-1", FRAME), ("cam-1", OTHER)]))
    assert imported.exit_code == 1, imported.output
    assert FRAME not in (fleet.root / labels_key("cam-1")).read_text()


@pytest.mark.parametrize(("field", "value"), [("model_version", "1.0.0\x1b]2;pwned\x07"), ("model", "../birds"),
                                              ("model_version", "latest")])
def test_a_signed_sample_whose_model_or_version_is_not_a_name_is_refused(tmp_path: Path, field: str,
                                                                         value: str) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    image = b"a frame"
    odd = spot_sample("cam-1", FRAME, image).model_copy(update={field: value})  # signed as it is
    fleet.plant("cam-1", FRAME, fleet.signed("cam-1", odd), image)
    result = fleet.cli("pending")
    assert result.exit_code == 0, result.output
    assert offered(result) == [] and "not a spot check sample" in result.output and "\x1b" not in result.output
