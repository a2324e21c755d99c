"""Device telemetry: the SQLite spool, the publisher (Pub/Sub or a local JSONL sink), health, messages.

The agent's loop uses `TelemetryService` (see `edgefleet.device.telemetry.service` for the exact calls).
Importing this package does not import google-cloud-pubsub; only a Pub/Sub sink does.
"""

from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.telemetry.health import read_health
from edgefleet.device.telemetry.service import TelemetryService, TelemetryStats

__all__ = ["TelemetryConfig", "TelemetryService", "TelemetryStats", "read_health"]
