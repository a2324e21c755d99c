"""Validated name and version types for pydantic fields: one definition instead of a validator per model.

    class RolloutParams(BaseModel):
        model: ModelName
        channel: ChannelName | None = None
        version: ModelVersion | None = None

A bad value fails validation with the layout's message, which names what it is and how to fix it (pydantic
adds the field's path), e.g. `model 'Birds' is not a valid name: use 1-63 lowercase letters, digits, ...`.
`EmptyIsNone` lets a form's empty text mean "not set" (`Annotated[ChannelName | None, EmptyIsNone]`).
Python 3.9 compatible: devices validate their configuration with these.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from edgefleet.kernel.contracts.layout import check_name, check_version


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


ModelName = Annotated[str, AfterValidator(partial(check_name, "model"))]
"""A model's name (layout rules: 1-63 lowercase letters, digits, `._-`, starting with a letter or digit)."""

ChannelName = Annotated[str, AfterValidator(partial(check_name, "channel"))]
"""A channel's name (`stable`, `canary`, ...), same rules as a model name."""

DeviceId = Annotated[str, AfterValidator(partial(check_name, "device id"))]
"""A device's id, unique in the fleet, same rules as a model name."""

SafeName = Annotated[str, AfterValidator(partial(check_name, "name"))]
"""Any other name that goes into paths or registry keys (a rollout id, ...), same rules."""

ModelVersion = Annotated[str, AfterValidator(check_version)]
"""A semantic version, MAJOR.MINOR.PATCH (e.g. 1.2.0)."""

EmptyIsNone = BeforeValidator(_empty_is_none)
"""Reads an empty string as None (an optional name or version left empty in a form or YAML)."""
