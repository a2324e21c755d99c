"""Anyone holding the devices' shared service account can create any object under `spotcheck/`: an oversized
record, a record that is not JSON, an oversized JPEG. Each is refused unread past its bound and listed by name;
it must not stop `edgefleet spotcheck pending` or `import` for every other device's samples."""

from __future__ import annotations

from pathlib import Path

from edgefleet.kernel.contracts.spotcheck import (
    MAX_SAMPLE_IMAGE_BYTES,
    MAX_SAMPLE_RECORD_BYTES,
    labels_key,
    sample_keys,
)
from tests.spot_samples import EnrolledFleet, offered, spot_sample

GOOD, BIG_RECORD, NOT_JSON, BIG_IMAGE = (f"20261207T210000Z-{n:012d}" for n in range(4))


def _fleet(tmp_path: Path) -> EnrolledFleet:
    fleet = EnrolledFleet(tmp_path, ("victim", "attacker"))
    fleet.upload("victim", GOOD, b"a real frame")
    fleet.plant_object(sample_keys("victim", BIG_RECORD)[1], b"{" + b" " * MAX_SAMPLE_RECORD_BYTES + b"}")
    fleet.plant_object(sample_keys("attacker", NOT_JSON)[1], b"not json at all")
    huge = b"\xff\xd8" + bytes(MAX_SAMPLE_IMAGE_BYTES)
    fleet.plant("attacker", BIG_IMAGE, fleet.signed("attacker", spot_sample("attacker", BIG_IMAGE, huge)), huge)
    return fleet


def test_an_oversized_or_garbled_sample_is_refused_and_the_others_still_offered(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    result = fleet.cli("pending")
    assert result.exit_code == 0, result.output
    assert offered(result) == [("victim", GOOD)]
    for device, frame in (("victim", BIG_RECORD), ("attacker", NOT_JSON), ("attacker", BIG_IMAGE)):
        assert f"REFUSED {fleet.root}/spotcheck/{device}/{frame}.json" in result.output
    assert "3 sample(s) refused" in result.output


def test_an_oversized_or_garbled_sample_is_not_imported_and_the_others_are(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    rows = [("victim", GOOD), ("victim", BIG_RECORD), ("attacker", NOT_JSON), ("attacker", BIG_IMAGE)]
    result = fleet.cli("import", fleet.labels_file(rows))
    assert result.exit_code == 1, result.output
    assert "victim: 1 labelled frame(s)" in result.output and "3 sample(s) refused" in result.output
    assert not (fleet.root / labels_key("attacker")).exists()
    assert BIG_RECORD not in (fleet.root / labels_key("victim")).read_text()
