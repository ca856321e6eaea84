"""Read a CTranslate2 `model.bin` into named tensors, without CTranslate2.

The layout mirrors `ctranslate2.specs.model_spec.ModelSpec._serialize` (binary version 6,
little-endian): a header (version, spec name, spec revision), the variables (name, shape,
dtype id, byte count, raw bytes), then aliases (a name that reuses another variable, which
the converter writes instead of storing a duplicate).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SUPPORTED_BINARY_VERSIONS = frozenset({5, 6})

# Order of the type ids in CTranslate2's `_dtype_to_type_id`.
_TORCH_DTYPE_BY_ID: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.float16,
    torch.bfloat16,
)


class WeightFormatError(ValueError):
    """The file is not a CTranslate2 model this parser understands (corrupt, truncated...)."""


@dataclass(frozen=True)
class Ct2Weights:
    spec_name: str
    spec_revision: int
    binary_version: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]

    def get(self, name: str) -> torch.Tensor:
        """The tensor stored under `name`, following aliases."""
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise WeightFormatError(f"the model has no variable named {name!r}") from None

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables


class _Reader:
    def __init__(self, data: memoryview, source: Path) -> None:
        self._data = data
        self._offset = 0
        self._source = source

    def take(self, size: int, what: str) -> memoryview:
        end = self._offset + size
        if end > len(self._data):
            raise WeightFormatError(
                f"{self._source} is truncated: needed {size} bytes for {what} at offset "
                f"{self._offset}, only {len(self._data) - self._offset} left"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))
        return int(value)

    def string(self, what: str) -> str:
        length = self.unpack("<H", f"the length of {what}")
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise WeightFormatError(f"{self._source}: {what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise WeightFormatError(f"{self._source}: {what} is not valid UTF-8") from None

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset


def _read_variable(reader: _Reader, index: int) -> tuple[str, torch.Tensor]:
    name = reader.string(f"the name of variable #{index}")
    rank = reader.unpack("<B", f"the rank of {name}")
    shape = tuple(reader.unpack("<I", f"dimension {d} of {name}") for d in range(rank))
    type_id = reader.unpack("<B", f"the dtype of {name}")
    if type_id >= len(_TORCH_DTYPE_BY_ID):
        raise WeightFormatError(f"{name} has unknown dtype id {type_id}")
    dtype = _TORCH_DTYPE_BY_ID[type_id]
    num_bytes = reader.unpack("<I", f"the byte count of {name}")
    element_count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    expected = element_count * torch.empty((), dtype=dtype).element_size()
    if num_bytes != expected:
        raise WeightFormatError(
            f"{name}: shape {shape} of {dtype} needs {expected} bytes, the file says {num_bytes}"
        )
    raw = reader.take(num_bytes, f"the values of {name}")
    # Copy out of the file buffer so the tensors stay valid after the buffer is gone.
    tensor = (
        torch.frombuffer(bytearray(raw), dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)
    )
    return name, tensor.reshape(shape)


def parse_ct2_model(
    data: bytes | bytearray | memoryview, source: Path | str = "<bytes>"
) -> Ct2Weights:
    """Parse the bytes of a CTranslate2 model.bin."""
    reader = _Reader(memoryview(data), Path(source))
    binary_version = reader.unpack("<I", "the binary version")
    if binary_version not in SUPPORTED_BINARY_VERSIONS:
        raise WeightFormatError(
            f"{source}: binary version {binary_version} is not a CTranslate2 model version "
            f"this parser supports ({sorted(SUPPORTED_BINARY_VERSIONS)})"
        )
    spec_name = reader.string("the spec name")
    spec_revision = reader.unpack("<I", "the spec revision")
    variable_count = reader.unpack("<I", "the variable count")
    variables = dict(_read_variable(reader, index) for index in range(variable_count))
    alias_count = reader.unpack("<I", "the alias count")
    aliases: dict[str, str] = {}
    for index in range(alias_count):
        alias = reader.string(f"alias #{index}")
        aliases[alias] = reader.string(f"the target of alias {alias}")
    if reader.remaining:
        raise WeightFormatError(f"{source}: {reader.remaining} unexpected bytes after the aliases")
    missing = sorted(target for target in aliases.values() if target not in variables)
    if missing:
        raise WeightFormatError(f"{source}: aliases point at missing variables {missing}")
    return Ct2Weights(spec_name, spec_revision, binary_version, variables, aliases)


def load_ct2_model(path: Path | str) -> Ct2Weights:
    """Read and parse a model.bin file."""
    file_path = Path(path)
    return parse_ct2_model(file_path.read_bytes(), file_path)
