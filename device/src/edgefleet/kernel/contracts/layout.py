"""Names and paths fixed by the contracts: registry layout, on-device layout, Pub/Sub names.

Defined once here so the agent, the pipelines, the fleet monitor and the Pulumi program cannot disagree.
"""

from __future__ import annotations

import re

# --- registry (same on GCS and on a local directory) ---------------------------------------------
MODELS_PREFIX = "models"
CHANNELS_DIR = "channels"
ROLLOUTS_PREFIX = "rollouts"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
LABELS_FILE = "labels.txt"
CPU_MODEL_FILE = "model_cpu.tflite"
EDGETPU_MODEL_FILE = "model_edgetpu.tflite"

# --- on the device (under the agent root) ---------------------------------------------------------
DEVICE_MODELS_DIR = "models"
CURRENT_POINTER = "current"
PREVIOUS_POINTER = "previous"
STATUS_FILE = "status.json"
SPOOL_FILE = "spool.sqlite"
INCOMING_DIR = ".incoming"  # the rollout's staging area: incoming/<model>/<version> until installed
REFUSED_FILE = ".refused.json"  # per model: the versions it refused (edgefleet.kernel.contracts.refusal)
DEFAULT_AGENT_ROOT = "~/.edgefleet-agent"
AGENT_ROOT_ENV = "EDGEFLEET_AGENT_ROOT"

# --- Pub/Sub and monitoring names (infra creates them; agents and the monitor use them) -----------
TELEMETRY_TOPIC = "edgefleet-telemetry"
TELEMETRY_DEAD_LETTER_TOPIC = "edgefleet-telemetry-dead-letter"
MONITOR_SUBSCRIPTION = "edgefleet-fleet-monitor"
DEAD_LETTER_SUBSCRIPTION = "edgefleet-telemetry-dead-letter-sub"
TELEMETRY_SCHEMA = "edgefleet-telemetry-v1"
ATTR_DEVICE_ID = "device_id"
ATTR_MODEL_VERSION = "model_version"
ATTR_EPOCH = "epoch"  # the spool epoch: (device, epoch, seq) identifies a message
ATTR_SIGNATURE = "sig"  # base64 Ed25519 signature by the device's own key (edgefleet.device.trust.device_identity)
FLEET_DEVICES_PREFIX = "fleet/devices"  # registry records: the fleet's device public keys
FLEET_REVOKED_PREFIX = "fleet/revoked"  # registry records: revoked device keys (edgefleet.kernel.contracts.devicekey)
FLEET_ENROL_TOKENS_PREFIX = "fleet/enrol-tokens"  # one-time enrolment tokens (edgefleet.kernel.contracts.enrolment)
FLEET_ENROL_REQUESTS_PREFIX = "fleet/enrol-requests"  # devices' enrolment requests (create-only for devices)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # fullmatch: `$` would accept a trailing newline
_VERSION = re.compile(r"\d{1,9}\.\d{1,9}\.\d{1,9}(?:[-+][0-9A-Za-z.-]{1,64})?")


def check_name(kind: str, value: object) -> str:
    """Returns `value` if it is a safe model/channel/device name, else raises ValueError naming `kind`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid name: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_version(value: object) -> str:
    """Returns `value` if it is a semantic version (1.2.3), else raises ValueError."""
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise ValueError(f"version {value!r} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return value


def is_version(name: str) -> bool:
    """True when `name` is a semantic version (a version directory or key, not a pointer or a file)."""
    return bool(_VERSION.fullmatch(name))


def version_prefix(model: str, version: str) -> str:
    """Registry key prefix of one immutable model version: `models/<model>/<version>`."""
    return f"{MODELS_PREFIX}/{check_name('model', model)}/{check_version(version)}"


def channel_key(model: str, channel: str) -> str:
    """Registry key of a channel pointer: `models/<model>/channels/<channel>.json`."""
    return f"{MODELS_PREFIX}/{check_name('model', model)}/{CHANNELS_DIR}/{check_name('channel', channel)}.json"


def version_sort_key(version: str) -> tuple[int, int, int, str]:
    """Sort key ordering semantic versions numerically (1.10.0 after 1.9.0)."""
    core = re.split(r"[-+]", check_version(version), maxsplit=1)[0]
    major, minor, patch = (int(part) for part in core.split("."))
    return (major, minor, patch, version)


def device_model_dir(model: str) -> str:
    """A model's directory in the device store, relative to the agent root: `models/<model>`."""
    return f"{DEVICE_MODELS_DIR}/{check_name('model', model)}"


def device_pointer(model: str, pointer: str) -> str:
    """A model's `current` or `previous` pointer (a symlink), relative to the agent root."""
    if pointer not in (CURRENT_POINTER, PREVIOUS_POINTER):
        raise ValueError(f"pointer {pointer!r} is neither {CURRENT_POINTER!r} nor {PREVIOUS_POINTER!r}")
    return f"{device_model_dir(model)}/{pointer}"


def device_version_dir(model: str, version: str) -> str:
    """An installed version's directory, relative to the agent root: `models/<model>/<version>`."""
    return f"{device_model_dir(model)}/{check_version(version)}"


def device_refused_file(model: str) -> str:
    """A model's refusal list, relative to the agent root: `models/<model>/.refused.json`."""
    return f"{device_model_dir(model)}/{REFUSED_FILE}"


def device_incoming_dir(model: str, version: str) -> str:
    """Where the rollout assembles a version before installing it: `.incoming/<model>/<version>`."""
    return f"{INCOMING_DIR}/{check_name('model', model)}/{check_version(version)}"
