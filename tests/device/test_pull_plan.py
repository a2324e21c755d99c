"""The pull round's plan (`edgefleet.device.pull_plan.plan_round`, `pointer_outcome`): pure, no store, no registry."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from edgefleet.device.pull_plan import Installed, StoreState, plan_round, pointer_outcome
from edgefleet.device.trust.pointers import Judgement
from edgefleet.device.window import MaintenanceWindow
from edgefleet.kernel.contracts.manifest import ChannelPointer

SHA = "ab" * 32
NIGHT = MaintenanceWindow(cron="0 2 * * *", timezone="UTC", duration_minutes=60)
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
NIGHT_TIME = datetime(2026, 3, 1, 2, 30, tzinfo=timezone.utc)


def pointer(version: str) -> ChannelPointer:
    return ChannelPointer(model="birds", channel="stable", version=version, manifest_sha256=SHA)


def plan(installed: Installed | None, *, window: MaintenanceWindow | None, now: datetime, current: str = "1.0.0"):
    return plan_round(pointer("1.1.0"), StoreState(current=Installed(current, SHA), installed=installed, floor="1.0.0",
                                                   refusal=None), window=window, now=now)


@pytest.mark.parametrize("installed", [None, Installed("1.1.0", SHA)], ids=["download", "activate"])
def test_a_new_version_outside_the_window_is_deferred_naming_when_it_opens(installed: Installed | None) -> None:
    step = plan(installed, window=NIGHT, now=NOON)
    assert step.action == "defer"
    assert "birds 1.1.0 waits for this device's maintenance window (opens 2026-03-02T02:00:00+00:00)" == step.reason


def test_inside_the_window_or_without_one_the_new_version_is_taken() -> None:
    assert plan(None, window=NIGHT, now=NIGHT_TIME).action == "download"
    assert plan(Installed("1.1.0", SHA), window=None, now=NOON).action == "activate"


def test_what_changes_nothing_is_never_deferred() -> None:
    assert plan(Installed("1.1.0", SHA), window=NIGHT, now=NOON, current="1.1.0").action == "keep"
    altered = Installed("1.1.0", "cd" * 32)
    assert plan(altered, window=NIGHT, now=NOON).action == "refuse"  # refusing changes nothing that runs


@pytest.mark.parametrize(("judgement", "outcome"), [
    (Judgement("accept", "ok", pointer("1.1.0")), None),
    (Judgement("expired", "the pointer expired"), "expired"),
    (Judgement("refuse", "bad signature"), "pointer_refused"),
    (Judgement("accept", "no side of the share for this device"), "pointer_refused"),
])
def test_a_pointer_goes_on_only_when_accepted_with_a_version_for_this_device(judgement: Judgement, outcome) -> None:
    assert pointer_outcome(judgement) == outcome
