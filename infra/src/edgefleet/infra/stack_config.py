"""Reads the stack's `edgefleet:*` configuration once into the typed `InfraConfig` (edgefleet.infra.config).

Keys live in the `edgefleet` namespace of the stack (`Pulumi.<stack>.yaml`). Flat keys are set with
`pulumi config set edgefleet:project my-project`; the grouped ones (telemetry, registry, alerts, bigquery)
are YAML objects, set one value at a time with `pulumi config set --path edgefleet:alerts.silentMinutes 15`.
`Pulumi.dev.yaml` at the repo root shows every key.

`load_config(pulumi.Config)` only collects the raw values; `config_from_values` turns them into an
`InfraConfig` or raises `ConfigError` naming the key and the command that fixes it, so a wrong stack fails
at `pulumi preview` before anything is created. Pulumi is imported only to read a running stack's keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgefleet.infra.config import (
    FLEET_STATE_PRIVATE_NEEDS_NETWORK,
    NO_CHANNEL,
    NO_TRUST_ANCHOR,
    InfraConfig,
)
from edgefleet.kernel.errors import ConfigError

if TYPE_CHECKING:
    import pulumi

NAMESPACE = "edgefleet"

# The fixes of the models' cross-field rules, as the commands that set the stack's keys.
NO_CHANNEL_FIX = (
    "pulumi config set --path 'edgefleet:alerts.notificationChannels[0]' projects/<project>/notificationChannels/<id> "
    "(list yours: gcloud beta monitoring channels list --format='value(name)'), or, to create the alerts anyway, "
    "pulumi config set --path edgefleet:alerts.allowWithoutChannel true"
)
NO_TRUST_ANCHOR_FIX = (
    "pulumi config set --path 'edgefleet:devices.trustAnchors[0]' \"$(cat fleet-ca.pem)\" (the CA that signs "
    "each device's certificate; see infra/README.md), or, where service account keys are allowed, "
    "pulumi config set --path edgefleet:devices.credentials key"
)
FLEET_STATE_PRIVATE_NEEDS_NETWORK_FIX = (
    "pulumi config set --path edgefleet:fleetState.privateNetwork projects/<project>/global/networks/<vpc> (a VPC "
    "with private services access), or pulumi config set --path edgefleet:fleetState.network public"
)

# Top-level keys: the aliases of InfraConfig's fields. Objects are stored by Pulumi as JSON text.
OBJECT_KEYS = frozenset(
    InfraConfig.model_fields[name].alias or name
    for name in ("telemetry", "registry", "alerts", "propagation", "devices", "bigquery", "fleet_state")
)
KNOWN_KEYS = frozenset(field.alias or name for name, field in InfraConfig.model_fields.items())
_EXAMPLES = {"project": "my-project", "region": "europe-west1", "fleetName": "edgefleet"}


def load_config(config: pulumi.Config) -> InfraConfig:
    """Reads the `edgefleet:*` stack configuration through `config` (a `pulumi.Config("edgefleet")`).

    Raises:
        ConfigError: naming the key that is missing, unknown or wrong and the command that sets it.
    """
    values = {key: config.get(key) for key in KNOWN_KEYS}
    return config_from_values(
        {key: value for key, value in values.items() if value is not None}, present_keys=_present_keys()
    )


def _present_keys() -> list[str]:
    """Every `edgefleet:` key the stack sets, to catch misspelled ones (Pulumi itself ignores them)."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return sorted(key.split(":", 1)[1] for key in keys if key.startswith(f"{NAMESPACE}:"))


def config_from_values(values: Mapping[str, str], present_keys: Iterable[str] = ()) -> InfraConfig:
    """Builds the `InfraConfig` from raw stack values (key without namespace -> text as Pulumi stores it).

    Args:
        values: `project` -> "my-project", `alerts` -> '{"silentMinutes": 15}', ...
        present_keys: every key the stack sets, checked for unknown (misspelled) ones.

    Raises:
        ConfigError: naming the key and the `pulumi config set` command that fixes it.
    """
    unknown = sorted(set(present_keys) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown stack config key(s): {', '.join(f'{NAMESPACE}:{key}' for key in unknown)}; "
            "known keys are "
            f"{', '.join(sorted(KNOWN_KEYS))}",
            f"fix the spelling or remove it: pulumi config rm {NAMESPACE}:{unknown[0]}",
        )
    raw: dict[str, Any] = {}
    for key, text in values.items():
        if key in OBJECT_KEYS:
            try:
                raw[key] = json.loads(text) if isinstance(text, str) else text
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"stack config key {NAMESPACE}:{key} is not an object ({error.msg})",
                    f"set its fields one by one: pulumi config set --path "
                    f"{NAMESPACE}:{key}.<field> <value> (see Pulumi.dev.yaml)",
                ) from error
        else:
            raw[key] = text
    for key in _CHECKED_SECTIONS:  # their rules (a channel, a trust anchor) apply when the key is not set too
        raw.setdefault(key, {})
    try:
        return InfraConfig.model_validate(raw)
    except ValidationError as error:
        raise _config_error(error) from error


_CHECKED_SECTIONS = ("alerts", "devices")
_RULE_FIXES = {NO_CHANNEL: NO_CHANNEL_FIX, NO_TRUST_ANCHOR: NO_TRUST_ANCHOR_FIX,
               FLEET_STATE_PRIVATE_NEEDS_NETWORK: FLEET_STATE_PRIVATE_NEEDS_NETWORK_FIX}


def _rule_of(item: Mapping[str, Any]) -> str | None:
    """The cross-field rule (no channel, no trust anchor) a validation error is, when it is one of them."""
    cause = (item.get("ctx") or {}).get("error")
    text = str(cause.args[0]) if isinstance(cause, ValueError) and cause.args else None
    return text if item["type"] == "value_error" and text in _RULE_FIXES else None


def _config_error(error: ValidationError) -> ConfigError:
    problems, fixes = [], []
    for item in error.errors():
        path = [str(part) for part in item["loc"]]
        key = f"{NAMESPACE}:{'.'.join(path)}" if path else NAMESPACE
        path_flag = "--path " if len(path) > 1 else ""
        example = _EXAMPLES.get(path[-1], "<value>") if path else "<value>"
        if item["type"] == "missing":
            problems.append(f"missing stack config key {key}")
        elif item["type"] == "extra_forbidden":
            problems.append(f"unknown stack config key {key}")
            fixes.append(f"pulumi config rm {path_flag}{key}")
            continue
        elif (rule := _rule_of(item)) is not None:
            problems.append(f"stack config key {key}: {rule}")
            fixes.append(_RULE_FIXES[rule])
            continue
        else:
            problems.append(f"stack config key {key}: {item['msg']}")
        fixes.append(f"pulumi config set {path_flag}{key} {example}")
    return ConfigError("; ".join(problems), "; ".join(fixes) + " (every key is shown in Pulumi.dev.yaml)")
