"""Narrowing parsed values (JSON, YAML: typed `Any`) to the containers the code then walks.

`isinstance(value, dict)` narrows such a value to `dict[Unknown, Unknown]`, which a strict type checker
reports at every later use; these guards narrow to `dict[Any, Any]` / `list[Any]`, saying that what the
container holds is still unchecked parser output (validated later, typically by a pydantic model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.TypeGuard is Python 3.10+; the annotation is only read by type checkers
    from typing_extensions import TypeGuard


def is_dict(value: object) -> TypeGuard[dict[Any, Any]]:
    """True when `value` is a dict (of parser output: keys and values unchecked)."""
    return isinstance(value, dict)


def is_list(value: object) -> TypeGuard[list[Any]]:
    """True when `value` is a list (of parser output: items unchecked)."""
    return isinstance(value, list)
