"""The fleet state's tables, one SQL text for both engines (SQLite and PostgreSQL), and its upgrades.

The DDL is written with SQLite's type names; `postgres_ddl` maps them to PostgreSQL's (REAL is a 4-byte float
there, so times and latencies become DOUBLE PRECISION; INTEGER becomes BIGINT, as SQLite's integers are 64-bit).

Tables (see `edgefleet.monitor.store` for what each row means):
- devices: one row per device, the latest snapshot (by seq) plus dedupe state, counters, the cached window of
  the version it runs now and its error ratio (indexed: `fleet status` finds failing devices by it).
- seq_gaps, latency_samples, version_counts, dist_counts, events, version_history, malformed,
  verified_devices, device_epochs: as before (schema 2).
- version_totals (schema 3): devices per (model, version) now, kept up to date on ingest (`aggregates`).
- fleet_counters (schema 3): devices, messages, duplicates and lost, summed over a few shard rows so that
  several monitor processes rarely wait on one row.
- device_tags (schema 3): free-form tags of a device (`fleet status --tag`).
- drift_state, drift_events (schema 4): per (device, model, version) the drift watch's baseline, CUSUM state and
  current drift; every drift alarm (`edgefleet.monitor.drift_watch`).
- calibrations (schema 4): per (model, version) the calibration table of the manifest (schema 3) when it verified
  against the release keyring, or why there is none or it was refused (`edgefleet.monitor.calibrations`).
- drift_windows (schema 5): every applied message's distributions, one row per (device, model, version, seq),
  until the drift watch has fed it to its detectors in the device's seq order (`edgefleet.monitor.drift_feed`);
  drift_state gains `last_seq` (the highest seq fed) and `late_windows` (windows that came after it, not fed).
- shadow_counts (schema 4): the telemetry's shadow blocks summed per (device, model, primary version, candidate
  version, time bucket, metric, key), for the shadow wave of pull rollouts (`edgefleet.monitor.shadows`).
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 5
READABLE_SCHEMAS = (1, 2, 3, 4, 5)  # older ones are upgraded in place on open (every change is additive)

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_received REAL NOT NULL,
    max_seq INTEGER NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    model_name TEXT, model_version TEXT, model_variant TEXT, backend TEXT,
    fps REAL,
    cpu_temp_c REAL, uptime_s REAL, mem_total_mb REAL, mem_available_mb REAL, load_1m REAL,
    tpu_present INTEGER, spool_depth INTEGER, spool_dropped INTEGER,
    latency_p50_ms REAL, latency_p95_ms REAL, window_inferences INTEGER, window_errors INTEGER,
    state_event_kind TEXT, state_event_time REAL, state_event_seq INTEGER,
    error_ratio REAL
);
CREATE TABLE IF NOT EXISTS seq_gaps (
    device_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    PRIMARY KEY (device_id, first_seq)
);
CREATE TABLE IF NOT EXISTS latency_samples (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, seq INTEGER NOT NULL,
    time REAL NOT NULL, p50_ms REAL NOT NULL, p95_ms REAL NOT NULL, count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, seq)
);
CREATE TABLE IF NOT EXISTS version_counts (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    bucket_start REAL NOT NULL, inferences INTEGER NOT NULL, errors INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version, device_id, bucket_start)
);
CREATE TABLE IF NOT EXISTS dist_counts (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    bucket_start REAL NOT NULL, metric TEXT NOT NULL, key INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version, device_id, bucket_start, metric, key)
);
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, model_name TEXT, model_version TEXT, from_version TEXT,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE IF NOT EXISTS version_history (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    variant TEXT NOT NULL, backend TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, variant, backend)
);
CREATE TABLE IF NOT EXISTS malformed (
    message_id TEXT PRIMARY KEY, device_id TEXT, error TEXT NOT NULL, deliveries INTEGER NOT NULL,
    first_received REAL NOT NULL, last_received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS verified_devices (
    device_id TEXT PRIMARY KEY, first_verified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_epochs (
    device_id TEXT NOT NULL, epoch INTEGER NOT NULL, base INTEGER NOT NULL,
    PRIMARY KEY (device_id, epoch)
);
CREATE TABLE IF NOT EXISTS version_totals (
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, devices INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version)
);
CREATE TABLE IF NOT EXISTS fleet_counters (
    shard INTEGER PRIMARY KEY, devices INTEGER NOT NULL, messages INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, lost INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS device_tags (
    tag TEXT NOT NULL, device_id TEXT NOT NULL,
    PRIMARY KEY (tag, device_id)
);
CREATE TABLE IF NOT EXISTS drift_state (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    status TEXT NOT NULL, first_bucket REAL NOT NULL, blocks INTEGER NOT NULL,
    baseline TEXT, cusum TEXT, carry TEXT,
    statistic TEXT, direction TEXT, effect_sd REAL, effect REAL, drift_time REAL,
    score_counts TEXT, note TEXT, updated REAL NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version)
);
CREATE TABLE IF NOT EXISTS drift_windows (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, seq INTEGER NOT NULL,
    received REAL NOT NULL, fed INTEGER NOT NULL, dist TEXT NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, seq)
);
CREATE TABLE IF NOT EXISTS drift_events (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, time REAL NOT NULL,
    statistic TEXT NOT NULL, direction TEXT NOT NULL, effect_sd REAL NOT NULL, effect REAL NOT NULL,
    baseline REAL NOT NULL, onset_block INTEGER NOT NULL, alarm_block INTEGER NOT NULL,
    PRIMARY KEY (device_id, model_name, model_version, time, statistic, direction)
);
CREATE TABLE IF NOT EXISTS shadow_counts (
    device_id TEXT NOT NULL, model_name TEXT NOT NULL, primary_version TEXT NOT NULL,
    candidate_version TEXT NOT NULL, bucket_start REAL NOT NULL, metric TEXT NOT NULL, key INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (model_name, candidate_version, device_id, primary_version, bucket_start, metric, key)
);
CREATE TABLE IF NOT EXISTS calibrations (
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, images TEXT, correct TEXT, note TEXT NOT NULL,
    state TEXT, manifest_sha256 TEXT, checked_at REAL, conflict TEXT,
    PRIMARY KEY (model_name, model_version)
);
"""

# Columns added after schema 1/2 (added to an older table before the indexes that use them).
ADDED_COLUMNS = (("devices", "error_ratio", "REAL"),
                 # calibrations rows written before manifest signatures were checked have state NULL: never trusted
                 ("calibrations", "state", "TEXT"), ("calibrations", "manifest_sha256", "TEXT"),
                 ("calibrations", "checked_at", "REAL"), ("calibrations", "conflict", "TEXT"),
                 # schema 5: the drift watch's watermark and the windows that arrived below it (NULL: none yet)
                 ("drift_state", "last_seq", "INTEGER"), ("drift_state", "late_windows", "INTEGER"))

INDEXES = """
CREATE INDEX IF NOT EXISTS events_by_version ON events (model_version, kind, time);
CREATE INDEX IF NOT EXISTS events_by_from_version ON events (from_version, kind, time);
CREATE INDEX IF NOT EXISTS devices_by_received ON devices (last_received);
CREATE INDEX IF NOT EXISTS devices_by_error_ratio ON devices (error_ratio);
CREATE INDEX IF NOT EXISTS devices_by_state_event ON devices (state_event_time);
CREATE INDEX IF NOT EXISTS devices_by_version ON devices (model_name, model_version, device_id);
CREATE INDEX IF NOT EXISTS tags_by_device ON device_tags (device_id);
CREATE INDEX IF NOT EXISTS drift_windows_waiting ON drift_windows (fed, received);
"""

# An error ratio as `stats.WindowStats.error_ratio` computes it (NULL: no inference and no error).
ERROR_RATIO_SQL = (
    "CASE WHEN COALESCE(window_inferences, 0) = 0 AND COALESCE(window_errors, 0) = 0 THEN NULL "
    "WHEN COALESCE(window_errors, 0) >= COALESCE(window_inferences, 0) THEN 1.0 "
    "ELSE CAST(window_errors AS DOUBLE PRECISION) / window_inferences END")

# Filling the schema 3 aggregates from the device rows (once, when an older state is upgraded).
FILL_AGGREGATES = (
    f"UPDATE devices SET error_ratio = {ERROR_RATIO_SQL}",
    "DELETE FROM version_totals",
    "INSERT INTO version_totals (model_name, model_version, devices) SELECT COALESCE(model_name, ''), "
    "COALESCE(model_version, ''), COUNT(*) FROM devices GROUP BY COALESCE(model_name, ''), "
    "COALESCE(model_version, '')",
    "DELETE FROM fleet_counters",
    "INSERT INTO fleet_counters (shard, devices, messages, duplicates, lost) SELECT 0, COUNT(*), "
    "COALESCE(SUM(messages), 0), COALESCE(SUM(duplicates), 0), COALESCE(SUM(lost), 0) FROM devices",
)

_POSTGRES_TYPES = ((re.compile(r"\bREAL\b"), "DOUBLE PRECISION"), (re.compile(r"\bINTEGER\b"), "BIGINT"))


def postgres_ddl(ddl: str) -> str:
    """`ddl` with SQLite's type names mapped to PostgreSQL's."""
    for pattern, replacement in _POSTGRES_TYPES:
        ddl = pattern.sub(replacement, ddl)
    return ddl


def statements(script: str) -> list[str]:
    """The statements of a DDL script (none of ours holds a `;` inside a string)."""
    return [statement.strip() for statement in script.split(";") if statement.strip()]
