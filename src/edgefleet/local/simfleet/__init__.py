"""A fleet simulator: thousands of light simulated devices in one asyncio process (issue 23, item 3).

Pure device behaviour in `behaviour` (the agent's own pointer decision, the model's behaviour per version
profile), the I/O loop in `runner` (pointer reads from the registry, signed telemetry through Pub/Sub).
"""

from edgefleet.local.simfleet.behaviour import PROFILES, DeviceState, PollOutcome, Profile, decide_poll, window_records
from edgefleet.local.simfleet.runner import FleetSpec, SimDevice, SimFleet, SimSettings, enrol_fleet

__all__ = ["PROFILES", "DeviceState", "FleetSpec", "PollOutcome", "Profile", "SimDevice", "SimFleet", "SimSettings",
           "decide_poll", "enrol_fleet", "window_records"]
