"""Errors users see: each names the thing that is wrong and what to do about it."""

from __future__ import annotations

from pydantic import ValidationError


class EdgefleetError(Exception):
    """Base for errors that carry a fix for the user.

    Args:
        message: What is wrong, naming the thing (file, key, device, topic...).
        fix: What the user can do about it. Shown after the message.
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class ConfigError(EdgefleetError):
    """A configuration file or value is wrong."""


class ModelError(EdgefleetError):
    """A model cannot be opened, allocated or run."""


class NoEdgeTpuError(ModelError):
    """An Edge TPU model was asked for on a machine without an Edge TPU."""


class LabelsError(EdgefleetError):
    """A labels file is missing or does not match the model."""


class ImageError(EdgefleetError):
    """An input image cannot be read."""


class VerificationError(EdgefleetError):
    """A model version's files or manifest signature do not verify."""


class StoreError(EdgefleetError):
    """The on-device model store is missing something or cannot change as asked."""


class RegistryError(EdgefleetError):
    """The model registry (GCS or local directory) refused or lacks something."""


class ConflictError(RegistryError):
    """A compare-and-swap lost: somebody else changed the object first."""


class TelemetryError(EdgefleetError):
    """Telemetry cannot be spooled or published."""


def describe_validation_error(error: ValidationError, origin: str | None = None) -> str:
    """One line naming every wrong, missing or unknown key of a pydantic validation error.

    Args:
        error: what pydantic raised for a config model.
        origin: where the values came from (a file path, "environment"); prefixed when given.
    """
    parts: list[str] = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (check its spelling against the configuration reference)")
        elif item["type"] == "missing":
            parts.append(f"missing key '{key}'")
        else:
            parts.append(f"key '{key}': {item['msg']}")
    text = "; ".join(parts)
    return f"{origin}: {text}" if origin else text
