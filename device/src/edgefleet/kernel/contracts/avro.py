"""Avro schemas generated from pydantic models, and the Avro JSON encoding (the telemetry topic's wire codec).

Part of the device's contracts: pure Python (no Pulumi, no Google Cloud, no fastavro), so the agent, the
fleet monitor, the Pulumi program and the local twin all use this one definition.

Why a codec: Pub/Sub validates JSON-encoded messages with the Avro JSON encoding, in which a non-null value
of a union (every `X | None` field) is wrapped in an object naming its branch: `"cpu_temp_c": {"double":
51.5}`, `"model": {"ModelRef": {...}}`. Plain JSON (`TelemetryMessage.to_json_bytes()`) with such a value is
rejected ("Could not parse message"), by the emulator and by Pub/Sub alike. So the wire format IS this
encoding: `contracts.telemetry` builds its codec here (`AvroJson.of(TelemetryMessage)`); this module knows no
contract.

The mapping: str -> string, int -> long, float -> double, bool -> boolean, datetime -> string (ISO 8601, as
pydantic writes it), Literal -> enum, list[X] -> array, nested models -> records (defined once, then
referenced by name), `X | None` -> ["null", X] with default null. Field names are the JSON names (aliases).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgefleet.kernel.narrowing import is_dict, is_list

AvroType = Union[str, dict[str, Any], list[Any]]  # a runtime alias: Python 3.9 has no `X | Y`

_PRIMITIVES: dict[type, str] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    datetime: "string",
}


class AvroSchemaError(TypeError):
    """A pydantic model uses a type this generator cannot express in Avro (names the field)."""


def avro_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Returns the Avro record schema (a JSON-able dict) of pydantic `model`.

    Raises:
        AvroSchemaError: naming the field whose type has no Avro mapping here.
    """
    defined: set[str] = set()
    schema = _record(model, defined)
    if not isinstance(schema, dict):  # the top record is always defined first, hence a dict
        raise AvroSchemaError(f"{model.__name__} did not produce a record schema")
    return schema


@dataclass(frozen=True)
class AvroJson:
    """The Avro JSON encoding of one record schema, its named types resolved once (encoding runs per message)."""

    schema: dict[str, Any]
    named: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, model: type[BaseModel]) -> AvroJson:
        schema = avro_schema(model)
        return cls(schema, _named_types(schema))

    def definition(self) -> str:
        """The schema as the canonical JSON text Pub/Sub stores (sorted keys, compact)."""
        return json.dumps(self.schema, sort_keys=True, separators=(",", ":"))

    def wrap(self, plain: Any) -> Any:
        """A plain JSON value (as `model_dump(mode="json")` gives) in the Avro JSON encoding: unions wrapped."""
        return plain if self._wrapper is None else self._wrapper(plain)

    @cached_property
    def _wrapper(self) -> Wrapper | None:
        """`wrap` compiled once (it runs per message): only the unions and what holds them are visited."""
        return _compile_wrap(self.schema, self.named, {})

    def unwrap(self, value: Any) -> Any:
        """Inverse of `wrap`; plain (unwrapped) values pass through unchanged."""
        return _walk(self.schema, value, self.named, wrap=False)


def _record(model: type[BaseModel], defined: set[str]) -> AvroType:
    name = model.__name__
    if name in defined:
        return name
    defined.add(name)
    fields: list[dict[str, Any]] = []
    for field_name, info in model.model_fields.items():
        json_name = info.alias or field_name
        where = f"{name}.{json_name}"
        avro_type = _avro_type(info.annotation, defined, where, enum_name=f"{name}{_camel(json_name)}")
        field: dict[str, Any] = {"name": json_name, "type": avro_type}
        if info.description:
            field["doc"] = info.description
        default = _default(info)
        if default is not _NO_DEFAULT:
            field["default"] = default
        fields.append(field)
    record: dict[str, Any] = {"type": "record", "name": name, "fields": fields}
    doc = (model.__doc__ or "").strip().splitlines()
    if doc:
        record["doc"] = doc[0]
    return record


_NO_DEFAULT = object()
# `X | None` is a types.UnionType (Python 3.10+); `Optional[X]` and 3.9's evaluated backports are typing.Union.
_UNION_ORIGINS = tuple({typing.Union, getattr(types, "UnionType", typing.Union)})


def _default(info: Any) -> Any:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        return _NO_DEFAULT
    return value if _representable(value) else _NO_DEFAULT  # else the field simply has no default


def _representable(value: object) -> bool:
    """Whether `value` can be an Avro default as it is."""
    return value is None or isinstance(value, (str, int, float, bool, list))


def _avro_type(annotation: Any, defined: set[str], where: str, enum_name: str) -> AvroType:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNION_ORIGINS:
        branches = [arg for arg in args if arg is not type(None)]
        if len(branches) != 1 or len(args) != 2:
            raise AvroSchemaError(f"{where}: only `X | None` unions map to Avro here, not {annotation}")
        return ["null", _avro_type(branches[0], defined, where, enum_name)]
    if origin is Literal:
        if not all(isinstance(arg, str) for arg in args):
            raise AvroSchemaError(f"{where}: only string Literals map to an Avro enum, not {annotation}")
        if enum_name in defined:
            return enum_name
        defined.add(enum_name)
        return {"type": "enum", "name": enum_name, "symbols": list(args)}
    if origin is list:
        return {"type": "array", "items": _avro_type(args[0], defined, where, enum_name)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _record(annotation, defined)
    if annotation in _PRIMITIVES:
        return _PRIMITIVES[annotation]
    raise AvroSchemaError(
        f"{where}: type {annotation!r} has no Avro mapping; use str, int, float, bool, "
        "datetime, a Literal of strings, list[...], a model, or `X | None`"
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# --- Avro JSON encoding -------------------------------------------------------------------------------------


def to_avro_json(schema: dict[str, Any], value: Any) -> Any:
    """Converts a plain JSON value (as `model_dump(mode="json")` gives) to the Avro JSON encoding of `schema`.

    Only unions change: a non-null value is wrapped as `{branch_name: value}`.
    """
    return _walk(schema, value, _named_types(schema), wrap=True)


def from_avro_json(schema: dict[str, Any], value: Any) -> Any:
    """Inverse of `to_avro_json`: unwraps union values. Plain (unwrapped) values pass through unchanged."""
    return _walk(schema, value, _named_types(schema), wrap=False)


def _named_types(schema: AvroType) -> dict[str, dict[str, Any]]:
    named: dict[str, dict[str, Any]] = {}

    def visit(node: AvroType) -> None:
        if isinstance(node, list):
            for branch in node:
                visit(branch)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                named[node["name"]] = node
            for field in node.get("fields", []):
                visit(field["type"])
            if node.get("type") == "array":
                visit(node["items"])

    visit(schema)
    return named


def _branch_name(branch: AvroType) -> str:
    if isinstance(branch, str):
        return branch
    if isinstance(branch, dict):
        return branch.get("name") or branch["type"]
    raise AvroSchemaError(f"nested unions are not supported: {branch!r}")


Wrapper = Callable[[Any], Any]
_COMPILING: Any = object()


def _compile_wrap(node: AvroType, named: dict[str, dict[str, Any]],
                  records: dict[str, Any]) -> Wrapper | None:
    """The function `_walk(node, ..., wrap=True)` amounts to, or None where values pass unchanged (primitives,
    enums, arrays and records holding no union). `records`: each named record's function, compiled once."""
    if isinstance(node, str):
        if node not in named:
            return None  # a primitive
        if records.get(node) is _COMPILING:  # a recursive record: its function is looked up when called
            return lambda value: value if records[node] is None else records[node](value)
        if node in records:
            return records[node]
        node = named[node]
    if isinstance(node, list):  # union: ["null", X]
        branch = next(b for b in node if b != "null")
        return _union_wrapper(_branch_name(branch), _compile_wrap(branch, named, records))
    if node["type"] == "record":
        records[node["name"]] = _COMPILING
        fields = [(field["name"], wrapper) for field in node["fields"]
                  if (wrapper := _compile_wrap(field["type"], named, records)) is not None]
        records[node["name"]] = _record_wrapper(fields) if fields else None
        return records[node["name"]]
    if node["type"] == "array":
        items = _compile_wrap(node["items"], named, records)
        return None if items is None else (
            lambda value: [items(item) for item in value] if is_list(value) else value)
    return None


def _union_wrapper(name: str, inner: Wrapper | None) -> Wrapper:
    if inner is None:
        return lambda value: None if value is None else {name: value}
    return lambda value: None if value is None else {name: inner(value)}


def _record_wrapper(fields: list[tuple[str, Wrapper]]) -> Wrapper:
    def wrap(value: Any) -> Any:
        if not is_dict(value):
            return value  # left for validation to reject, with the model's own message
        out = dict(value)
        for name, wrapper in fields:
            if name in out:
                out[name] = wrapper(out[name])
        return out
    return wrap


def _walk(node: AvroType, value: Any, named: dict[str, dict[str, Any]], wrap: bool) -> Any:
    resolve: Callable[[AvroType], AvroType] = lambda n: named.get(n, n) if isinstance(n, str) else n  # noqa: E731
    node = resolve(node)
    if isinstance(node, list):  # union: ["null", X]
        if value is None:
            return None
        branch = next(b for b in node if b != "null")
        name = _branch_name(branch)
        if wrap:
            return {name: _walk(branch, value, named, wrap)}
        if is_dict(value) and len(value) == 1 and name in value:
            value = value[name]
        return _walk(branch, value, named, wrap)
    if isinstance(node, dict) and node["type"] == "record":
        if not is_dict(value):
            return value  # left for validation to reject, with the model's own message
        out = dict(value)
        for field in node["fields"]:
            if field["name"] in out:
                out[field["name"]] = _walk(field["type"], out[field["name"]], named, wrap)
        return out
    if isinstance(node, dict) and node["type"] == "array" and is_list(value):
        return [_walk(node["items"], item, named, wrap) for item in value]
    return value
