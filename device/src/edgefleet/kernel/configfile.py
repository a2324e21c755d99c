"""Reading configuration files: one YAML reader and one loader into a pydantic model, for every config.

Every config of the project (agent, monitor, release, rollout, promotion, deploy-agent) goes through `load`,
so a missing file, a YAML syntax error, a document that is not a mapping, or a wrong key reads the same
everywhere: the file, the key, what to do, and the cause chained.

YAML is read with YAML 1.2's booleans: only `true`/`false` (any case PyYAML knows) are booleans. PyYAML
follows YAML 1.1, where `on`, `off`, `yes` and `no` are booleans too, so `mode: off` used to arrive as
`False` and fail a field whose values are strings. Here they stay strings; a boolean field still accepts
them, since pydantic reads 'on'/'off'/'yes'/'no' as booleans where a boolean is meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar, Union

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from edgefleet.kernel.errors import ConfigError, describe_validation_error
from edgefleet.kernel.narrowing import is_dict

_BOOL_TAG = "tag:yaml.org,2002:bool"
M = TypeVar("M", bound=BaseModel)


_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Resolvers = dict[Optional[str], list[tuple[str, re.Pattern[str]]]]  # a runtime alias: Python 3.9


def _yaml12_resolvers(resolvers: _Resolvers) -> _Resolvers:
    """PyYAML's implicit resolvers (first character: [(tag, regexp)]) with YAML 1.2's booleans for 1.1's."""
    out = {first: [(tag, regexp) for tag, regexp in entries if tag != _BOOL_TAG]
           for first, entries in resolvers.items()}
    for first in "tTfF":  # what PyYAML's add_implicit_resolver does, without its untyped signature
        out.setdefault(first, []).append((_BOOL_TAG, _YAML12_BOOL))
    return out


class ConfigYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: `on`/`off`/`yes`/`no` stay strings."""

    yaml_implicit_resolvers = _yaml12_resolvers(yaml.SafeLoader.yaml_implicit_resolvers)


def parse_yaml(text: str) -> Any:
    """The YAML document in `text`, read as config files are (YAML 1.2 booleans).

    Raises:
        yaml.YAMLError: not YAML.
    """
    return yaml.load(text, Loader=ConfigYamlLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: str | Path, what: str, *, missing_fix: str, shape_fix: str) -> dict[str, Any]:
    """Returns the YAML mapping in `path` (an empty file is an empty mapping).

    Args:
        path: the file.
        what: how to name it in errors, e.g. "agent config".
        missing_fix: what to do when the file does not exist.
        shape_fix: what to do when the document is not a mapping of keys to values.

    Raises:
        ConfigError: missing file, a directory, not UTF-8, unreadable, YAML syntax error, or not a mapping;
            each naming the file.
    """
    path = Path(path).expanduser()
    try:
        document = parse_yaml(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{what} {path} does not exist", missing_fix) from error
    except IsADirectoryError as error:
        raise ConfigError(f"{what} {path} is a directory, not a file", missing_fix) from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})",
                          "save the file as UTF-8") from error
    except PermissionError as error:
        raise ConfigError(f"{what} {path} cannot be read (permission denied)",
                          "check the file's permissions") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}",
                          "fix the syntax at the position shown") from error
    if document is None:
        return {}
    if not is_dict(document):
        raise ConfigError(f"{what} {path} must be a mapping of keys to values", shape_fix)
    return document


def load(model_cls: type[M], path: str | Path | None, *, what: str, missing_fix: str,
         shape_fix: str | None = None, fix: str | None = None, section: str | None = None,
         overrides: Mapping[str, Any] | None = None) -> M:
    """Reads `model_cls` from the YAML file `path` (None: from `overrides` alone) with `overrides` on top.

    Args:
        model_cls: the pydantic model (a pydantic-settings model also reads its environment).
        path: the YAML file; None when there is none.
        what: how to name the file in errors, e.g. "agent config".
        missing_fix: what to do when the file does not exist.
        shape_fix: what to do when the document is not a mapping (default: see the model).
        fix: what to do about wrong keys (default: fix the keys named, see the model).
        section: a key whose mapping, when the document has one, is the config (other keys are then
            left to their own readers).
        overrides: values that win over the file's (None values are ignored, so command-line options pass
            straight through).

    Raises:
        ConfigError: naming the file, every wrong, missing or unknown key, and the fix; the pydantic error
            (or the file error) is its cause.
    """
    reference = f"see {model_cls.__name__}"
    data: dict[str, Any] = {}
    origin = what
    if path is not None:
        origin = f"{what} {Path(path).expanduser()}"
        data = read_yaml_mapping(path, what, missing_fix=missing_fix, shape_fix=shape_fix or reference)
        if section is not None and isinstance(data.get(section), dict):
            data = data[section]
        data = dict(data)
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return validate(model_cls, data, origin=origin, fix=fix or f"fix the keys named above ({reference})")


def validate(model_cls: type[M], data: Mapping[Any, Any], *, origin: str, fix: str) -> M:
    """`data` as a `model_cls`, read from `origin` (a file, "environment", a device's parameters).

    Raises:
        ConfigError: "<origin>: " and every wrong, missing or unknown key, with `fix`; the pydantic error is
            its cause.
    """
    try:
        # A settings model reads its environment in __init__ only; a plain model takes any mapping.
        if hasattr(model_cls, "settings_customise_sources") and all(isinstance(key, str) for key in data):
            return model_cls(**data)
        return model_cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, origin), fix) from error


def tag_required(tag: str) -> Any:
    """A `json_schema_extra` for a variant that is not the union's default: its JSON schema requires `tag`, so a
    JSON-schema validator (Prefect's parameter check) finds exactly one variant for a section without `tag`
    (the default one), as `tagged_union` does."""

    def _require(schema: dict[str, Any]) -> None:
        schema["required"] = sorted({*schema.get("required", ()), tag})

    return _require


def tagged_union(*variants: type[BaseModel], tag: str, where: str, default: str | None = None,
                 aliases: Mapping[Any, str] | None = None) -> Any:
    """A discriminated union of `variants` (pydantic models), told apart by their literal field `tag`.

    A wrong combination fails when the config is read, naming the field and the fix: a key that belongs to
    another variant ("compile.host is for compile.mode ssh, not local: remove it, or set compile.mode: ssh"),
    or a tag no variant has (pydantic names the ones there are).

    Args:
        variants: the models; each has a `tag` field whose default is its own value, and those other than
            `default` declare `json_schema_extra=tag_required(tag)`.
        tag: the field that says which variant, e.g. "mode" or "kind".
        where: the config section, for messages (e.g. "compile", "source").
        default: the variant chosen when `tag` is absent (so configs written before the union still read).
        aliases: other values read as a tag, e.g. {False: "off"} for configs read elsewhere by YAML 1.1.

    Returns:
        the annotated type, for a model field.
    """
    by_tag = {variant.model_fields[tag].default: variant for variant in variants}

    def _choose(value: Any) -> Any:
        if not is_dict(value) or (tag not in value and default is None):
            return value
        chosen = value.get(tag, default)
        if aliases and isinstance(chosen, (bool, str)) and chosen in aliases:
            chosen = aliases[chosen]
        value = {**value, tag: chosen}
        variant = by_tag.get(chosen)
        if variant is None:
            return value  # pydantic's error names the tags there are
        for key in value:
            owners = [name for name, other in by_tag.items() if key in other.model_fields]
            if key not in variant.model_fields and owners:
                raise ValueError(f"{where}.{key} is for {where}.{tag} {' or '.join(owners)}, not {chosen}: "
                                 f"remove it, or set {where}.{tag}: {owners[0]}")
        return value

    return Annotated[Union[variants], Field(discriminator=tag), BeforeValidator(_choose)]  # noqa: UP007 - py3.9
