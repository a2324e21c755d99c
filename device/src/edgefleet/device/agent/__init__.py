"""The agent: capture -> inference -> telemetry stages, model watch and hot swap, status file."""
