"""Errors of the fleet monitor; each names the thing that is wrong and what to do."""

from __future__ import annotations

from edgefleet.kernel.errors import EdgefleetError


class MonitorError(EdgefleetError):
    """The fleet monitor cannot start or keep running (subscription missing, Pub/Sub refused...)."""


class FleetStateError(EdgefleetError):
    """The fleet state store is missing, unreadable, or lacks what was asked (an unknown device...)."""
