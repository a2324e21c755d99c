"""The shared kernel: what the device, the pipelines, the monitor and the infrastructure all speak.

Contracts (manifest, channel pointer, telemetry, agent status, on-device layout), errors, the config-file
loader, file-system primitives, signing primitives, the CLI error console and the metric catalogue. It runs on
every Coral (Python 3.9+, the device extra's dependencies only) and imports nothing from the other packages:
`device/`, `flows/`, `monitor/`, `local/`, `cli/` and `infra/` import from here, never the other way round.
"""
