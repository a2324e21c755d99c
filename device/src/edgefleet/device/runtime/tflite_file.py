"""A small, bounds-checked reader of the TFLite flatbuffer: just the model's operator codes.

The schema is `tensorflow/compiler/mlir/lite/schema/schema.fbs`: `Model.operator_codes` (field 1) is a
vector of `OperatorCode` tables with `deprecated_builtin_code: byte` (0), `custom_code: string` (1),
`version: int = 1` (2) and `builtin_code: BuiltinOperator` (3). The real builtin code is the larger of the
two builtin fields (the schema's own compatibility rule). Reading it ourselves keeps this working with
`tflite_runtime` builds that ship no schema module, and every offset is checked against the buffer so a
truncated file is reported instead of read out of range.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# schema.fbs field indices
_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_SUBGRAPH_OPERATORS = 3
_OPERATOR_OPCODE_INDEX = 0
_OPERATOR_INPUTS = 1
_OPERATOR_OUTPUTS = 2
_OPCODE_DEPRECATED_BUILTIN = 0
_OPCODE_CUSTOM_CODE = 1
_OPCODE_VERSION = 2
_OPCODE_BUILTIN = 3
BUILTIN_CUSTOM = 32  # BuiltinOperator.CUSTOM
_DEFAULT_OPCODE_VERSION = 1
_UOFFSET = 4  # sizeof(uoffset_t)


class FlatbufferError(ValueError):
    """The bytes are not a readable TFLite flatbuffer (truncated, corrupt, or not a model)."""


class OperatorCode(NamedTuple):
    """One entry of `Model.operator_codes`."""

    builtin_code: int
    custom_code: str | None
    version: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self._data):
            raise FlatbufferError(f"offset {pos} (+{size}) is outside the {len(self._data)}-byte buffer")
        return struct.unpack_from(fmt, self._data, pos)[0]

    def uoffset_target(self, pos: int) -> int:
        return pos + self._unpack("<I", pos)

    def field_pos(self, table: int, field: int) -> int | None:
        """Absolute position of `field` in `table`, None when the field is absent (default value)."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        entry = 4 + 2 * field  # after vtable_size and table_size
        if entry + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + entry)
        return table + offset if offset else None

    def scalar(self, table: int, field: int, fmt: str, default: int) -> int:
        pos = self.field_pos(table, field)
        return default if pos is None else self._unpack(fmt, pos)

    def vector_of_tables(self, table: int, field: int) -> list[int]:
        pos = self.field_pos(table, field)
        if pos is None:
            return []
        vector = self.uoffset_target(pos)
        length = self._unpack("<I", vector)
        if vector + _UOFFSET + length * _UOFFSET > len(self._data):
            raise FlatbufferError(f"vector of {length} at {vector} runs past the end of the buffer")
        return [self.uoffset_target(vector + _UOFFSET * (i + 1)) for i in range(length)]

    def int32_vector(self, table: int, field: int) -> tuple[int, ...]:
        pos = self.field_pos(table, field)
        if pos is None:
            return ()
        vector = self.uoffset_target(pos)
        length = self._unpack("<I", vector)
        end = vector + _UOFFSET + 4 * length
        if end > len(self._data):
            raise FlatbufferError(f"vector of {length} int32 at {vector} runs past the end of the buffer")
        return struct.unpack_from(f"<{length}i", self._data, vector + _UOFFSET)

    def string(self, table: int, field: int) -> str | None:
        pos = self.field_pos(table, field)
        if pos is None:
            return None
        start = self.uoffset_target(pos)
        length = self._unpack("<I", start)
        end = start + _UOFFSET + length
        if end > len(self._data):
            raise FlatbufferError(f"string of {length} bytes at {start} runs past the end of the buffer")
        try:
            return bytes(self._data[start + _UOFFSET:end]).decode("utf-8")
        except UnicodeDecodeError as error:
            raise FlatbufferError(f"string at {start} is not UTF-8") from error


class Operator(NamedTuple):
    """One operator of the main subgraph: its operator code and tensor indices (-1: optional input)."""

    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_operators(data: bytes) -> tuple[Operator, ...]:
    """Returns the operators of the model's main subgraph (subgraph 0), in execution order.

    Raises:
        FlatbufferError: The bytes cannot be read as a TFLite model.
    """
    reader = _Reader(data)
    subgraphs = reader.vector_of_tables(reader.uoffset_target(0), _MODEL_SUBGRAPHS)
    if not subgraphs:
        return ()
    return tuple(
        Operator(opcode_index=reader.scalar(op, _OPERATOR_OPCODE_INDEX, "<I", 0),
                 inputs=reader.int32_vector(op, _OPERATOR_INPUTS),
                 outputs=reader.int32_vector(op, _OPERATOR_OUTPUTS))
        for op in reader.vector_of_tables(subgraphs[0], _SUBGRAPH_OPERATORS))


def custom_op_outputs(data: bytes, name: str) -> tuple[int, ...] | None:
    """Output tensor indices of the first operator of the main subgraph with custom code `name`."""
    codes = read_operator_codes(data)
    for op in read_operators(data):
        if op.opcode_index < len(codes) and codes[op.opcode_index].custom_code == name:
            return op.outputs
    return None


def read_operator_codes(data: bytes) -> tuple[OperatorCode, ...]:
    """Returns the operator codes of a TFLite model.

    Args:
        data: The whole `.tflite` file.

    Raises:
        FlatbufferError: The bytes cannot be read as a TFLite model.
    """
    reader = _Reader(data)
    root = reader.uoffset_target(0)
    codes: list[OperatorCode] = []
    for table in reader.vector_of_tables(root, _MODEL_OPERATOR_CODES):
        deprecated = reader.scalar(table, _OPCODE_DEPRECATED_BUILTIN, "<b", 0)
        builtin = reader.scalar(table, _OPCODE_BUILTIN, "<i", 0)
        codes.append(OperatorCode(
            builtin_code=max(deprecated, builtin),
            custom_code=reader.string(table, _OPCODE_CUSTOM_CODE),
            version=reader.scalar(table, _OPCODE_VERSION, "<i", _DEFAULT_OPCODE_VERSION),
        ))
    return tuple(codes)


def custom_ops(codes: tuple[OperatorCode, ...]) -> tuple[str, ...]:
    """Names of the custom operators among `codes`, in model order."""
    return tuple(code.custom_code for code in codes
                 if code.builtin_code == BUILTIN_CUSTOM and code.custom_code is not None)
