"""Names the operator's spot-check commands take from people or from the bucket go into registry keys: a device
id with `..` or `/`, upper case, a frame id that is not `<run start>-<sequence>`, an object nested deeper or
named oddly under `spotcheck/`. None may read or write outside `spotcheck/<device id>/` or
`fleet/spotcheck-labels/`; each is refused with a clear error naming it (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spot_samples import EnrolledFleet, offered, spot_sample

FRAME = "20261207T210000Z-000000000001"


@pytest.mark.parametrize("device", ["../fleet", "cam-1/../cam-2", "Cam-1", "cam 1"])
def test_a_device_option_that_is_not_a_device_id_is_named_never_a_traceback(tmp_path: Path, device: str) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    result = fleet.cli("pending", "--device", device)
    assert result.exit_code == 2, result.output  # a usage error, as typer gives for a bad option
    assert "--device" in result.output and "is not a valid name" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("row", ["../fleet,{frame},robin", "cam-1,../../fleet/devices/cam-1,robin",
                                 "cam-1,{frame}/../x,robin", "CAM-1,{frame},robin"])
def test_a_label_row_naming_a_path_imports_nothing(tmp_path: Path, row: str) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    fleet.upload("cam-1", FRAME, b"a frame")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"device_id,frame_id,label\ncam-1,{FRAME},robin\n{row.format(frame=FRAME)}\n")
    result = fleet.cli("import", str(labels))
    assert result.exit_code != 0 and f"{labels}:3:" in result.output and "nothing imported" in result.output
    assert not (fleet.root / "fleet" / "spotcheck-labels").exists()


def test_objects_nested_deeper_or_oddly_named_are_never_offered(tmp_path: Path) -> None:
    fleet = EnrolledFleet(tmp_path, ("cam-1",))
    image = b"a frame"
    record = fleet.signed("cam-1", spot_sample("cam-1", FRAME, image)).model_dump_json(by_alias=True).encode()
    for key in (f"spotcheck/cam-1/sub/{FRAME}.json", f"spotcheck/cam-1/{FRAME}.jpg.json",
                f"spotcheck/cam-1/{FRAME}.JSON", f"spotcheck/{FRAME}.json"):
        fleet.plant_object(key, record)
    fleet.upload("cam-1", "20261207T210000Z-000000000002", b"the real one")
    result = fleet.cli("pending")
    assert result.exit_code == 0, result.output
    assert offered(result) == [("cam-1", "20261207T210000Z-000000000002")]
