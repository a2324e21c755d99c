"""status.json written when it matters (issue 24): at once on a change a reader acts on, else every interval."""

from __future__ import annotations

from datetime import datetime, timezone

from edgefleet.device.agent.status_schedule import StatusSchedule
from edgefleet.kernel.contracts.status import AgentStatus

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
RUNNING = AgentStatus(device_id="cam-1", pid=7, state="running", started_at=NOW, updated_at=NOW, version="1.0.0",
                      frames=10)


def test_a_status_is_rewritten_only_when_the_interval_is_up_if_nothing_changed() -> None:
    schedule = StatusSchedule(interval_s=5.0)
    assert schedule.due(RUNNING, now=100.0)  # nothing written yet
    schedule.written(RUNNING, now=100.0)
    counting = RUNNING.model_copy(update={"frames": 5000, "fps": 30.0, "spool_depth": 12})
    assert not schedule.due(counting, now=104.9)  # counters move every frame: not a reason to write
    assert schedule.due(counting, now=105.0)


def test_a_change_a_reader_acts_on_is_written_at_once() -> None:
    changes = [{"state": "stopping"}, {"version": "1.1.0"}, {"swaps": 1}, {"swap_failures": 1},
               {"last_error": "frame source: gone"}, {"edgetpu_unavailable": "no Edge TPU"},
               {"backend": "edgetpu:usb:0"}]
    for change in changes:
        schedule = StatusSchedule(interval_s=5.0)
        schedule.written(RUNNING, now=100.0)
        assert schedule.due(RUNNING.model_copy(update=change), now=100.1), change
