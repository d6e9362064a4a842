"""MindSpore ``.ckpt`` files read without MindSpore (facts: docs/reference/MINDSPORE_FORMATS.md §1).

A checkpoint is a run of serialised ``Checkpoint`` protobuf messages, one ``Value`` per tensor
(or per 512 MiB piece of a larger tensor, each piece repeating the name and the full dims),
optionally followed by a ``b"crc_num"`` + 10-byte big-endian CRC-32 trailer over everything before
it. The ``Value`` messages are decoded by the protobuf runtime from a descriptor built here, so no
generated ``_pb2`` module (and no MindSpore) is needed. Walking the top-level framing (a key byte
and a varint length per value) is done by hand: it is what lets an error name the parameter and
the byte offset where the file goes wrong instead of protobuf's bare "truncated message".
"""
from __future__ import annotations

import binascii
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from scaledet.errors import DataError, MissingFileError

__all__ = ["MindSporeCheckpointError", "read_mindspore_checkpoint", "MINDSPORE_DTYPES"]

# MindSpore's ``tensor_type`` strings -> little-endian numpy dtypes (BFloat16 is viewed afterwards).
MINDSPORE_DTYPES: dict[str, np.dtype] = {
    "Bool": np.dtype("?"), "Int8": np.dtype("i1"), "UInt8": np.dtype("u1"),
    "Int16": np.dtype("<i2"), "UInt16": np.dtype("<u2"), "Int32": np.dtype("<i4"),
    "UInt32": np.dtype("<u4"), "Int64": np.dtype("<i8"), "UInt64": np.dtype("<u8"),
    "Float16": np.dtype("<f2"), "Float32": np.dtype("<f4"), "Float64": np.dtype("<f8"),
    "BFloat16": np.dtype("<u2"),
}
_CRC_MARK = b"crc_num"
_CRC_TRAILER = len(_CRC_MARK) + 10
# First 4 bytes (little-endian) of a file MindSpore encrypted with enc_key (AES-GCM, AES-CBC, SM4-CBC).
_CIPHER_MAGICS = {0x7F3A5ED8, 0x7F3A5ED9, 0x7F3A5EDA}
_VALUE_KEY = 0x0A  # field 1 (Checkpoint.value), wire type 2 (length-delimited)

Loaded = Union[torch.Tensor, str, bytes, tuple]


class MindSporeCheckpointError(DataError):
    """A file that is not a readable, unencrypted MindSpore checkpoint."""


def _value_class() -> type[message.Message]:
    """``Checkpoint.Value`` built from a descriptor at run time, in a private pool so that a
    MindSpore installed beside scaledet (with its own ``checkpoint.proto``) cannot clash."""
    proto = descriptor_pb2.FileDescriptorProto(name="scaledet_mindspore_checkpoint.proto",
                                               package="scaledet.mindspore", syntax="proto2")
    field = descriptor_pb2.FieldDescriptorProto
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    tensor.field.add(name="tensor_type", number=2, type=field.TYPE_STRING, label=field.LABEL_REQUIRED)
    tensor.field.add(name="tensor_content", number=3, type=field.TYPE_BYTES, label=field.LABEL_REQUIRED)
    map_tensor = proto.message_type.add(name="MapTensorProto")
    map_tensor.field.add(name="tensor", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                         type_name=".scaledet.mindspore.TensorProto")
    value = proto.message_type.add(name="Value")
    value.oneof_decl.add(name="value")
    value.field.add(name="tag", number=1, type=field.TYPE_STRING, label=field.LABEL_REQUIRED)
    value.field.add(name="tensor", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                    type_name=".scaledet.mindspore.TensorProto", oneof_index=0)
    value.field.add(name="maptensor", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                    type_name=".scaledet.mindspore.MapTensorProto", oneof_index=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("scaledet.mindspore.Value")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf before 4.22


_Value = _value_class()


def _varint(data: memoryview, pos: int) -> tuple[int, int] | None:
    """``(value, next position)``, or None if the data ends inside the varint."""
    result = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None


def _partial_name(body: memoryview) -> str | None:
    """The tag (field 1) of a value whose bytes were cut off, if enough of it survives."""
    if len(body) < 2 or body[0] != _VALUE_KEY:
        return None
    header = _varint(body, 1)
    if header is None or header[1] + header[0] > len(body):
        return None
    return bytes(body[header[1]:header[1] + header[0]]).decode("utf-8", "replace")


def _values(path: Path, data: memoryview) -> Iterator[tuple[int, message.Message]]:
    """``(byte offset, Value)`` for each top-level value of the file."""
    pos, previous = 0, None
    while pos < len(data):
        after = f" (after parameter {previous!r})" if previous else ""
        if data[pos] != _VALUE_KEY:
            what = "not a MindSpore checkpoint" if previous is None else "corrupt checkpoint"
            raise MindSporeCheckpointError(f"{path}: {what}: unexpected byte 0x{data[pos]:02x} at offset {pos}{after}")
        header = _varint(data, pos + 1)
        if header is None:
            raise MindSporeCheckpointError(f"{path}: truncated checkpoint: the file ends in the length of the value "
                                           f"at offset {pos}{after}")
        length, start = header
        if start + length > len(data):
            name = _partial_name(data[start:])
            which = f"parameter {name!r}" if name else f"the value at offset {pos}{after}"
            raise MindSporeCheckpointError(f"{path}: truncated checkpoint: {which} needs {start + length - len(data)} "
                                           f"more bytes than the file has ({len(data)} bytes)")
        try:
            value = _Value.FromString(bytes(data[start:start + length]))
        except message.DecodeError as err:
            name = _partial_name(data[start:start + length])
            which = f"parameter {name!r}" if name else f"the value at offset {pos}{after}"
            raise MindSporeCheckpointError(f"{path}: corrupt checkpoint: {which} does not decode ({err})") from None
        if not value.HasField("tag") or not (value.HasField("maptensor") or _complete(value.tensor)):
            raise MindSporeCheckpointError(f"{path}: corrupt checkpoint: the value at offset {pos}{after} lacks its "
                                           "name, type or content")
        yield pos, value
        previous = value.tag
        pos = start + length


def _complete(tensor: message.Message) -> bool:
    return tensor.HasField("tensor_type") and tensor.HasField("tensor_content")


def _tensor(path: Path, name: str, tensor_type: str, dims: list[int], content: bytes) -> Loaded:
    if tensor_type == "str":
        return content.decode("utf-8")
    if tensor_type == "random_op":  # MindSpore's saved RNG state: opaque bytes
        return bytes(content)
    dtype = MINDSPORE_DTYPES.get(tensor_type)
    if dtype is None:
        raise MindSporeCheckpointError(f"{path}: parameter {name!r} has unknown tensor_type {tensor_type!r}; "
                                       f"known: {', '.join(MINDSPORE_DTYPES)}, str")
    if len(content) % dtype.itemsize:
        raise MindSporeCheckpointError(f"{path}: parameter {name!r}: {len(content)} bytes is not a whole number of "
                                       f"{tensor_type} values")
    array = np.frombuffer(content, dtype).astype(dtype.newbyteorder("="))
    # Scalars are written with no dims (MindSpore 2.x) or as dims [0] holding one value (older writers).
    shape = () if (not dims or dims == [0]) and array.size == 1 else tuple(dims)
    if int(np.prod(shape, dtype=np.int64)) != array.size:
        raise MindSporeCheckpointError(f"{path}: parameter {name!r}: dims {list(dims)} need "
                                       f"{int(np.prod(shape, dtype=np.int64))} values, the content holds {array.size}")
    result = torch.from_numpy(array.reshape(shape))
    return result.view(torch.bfloat16) if tensor_type == "BFloat16" else result


def _check_crc(path: Path, data: memoryview) -> memoryview:
    """The data without its CRC trailer (checked) if it has one."""
    if len(data) >= _CRC_TRAILER and bytes(data[-_CRC_TRAILER:-10]) == _CRC_MARK:
        stored = int.from_bytes(data[-10:], "big")
        body = data[:-_CRC_TRAILER]
        if binascii.crc32(body) != stored:
            raise MindSporeCheckpointError(f"{path}: damaged checkpoint: CRC-32 of the content is "
                                           f"{binascii.crc32(body):#010x}, the crc_num trailer says {stored:#010x}")
        return body
    return data


def read_mindspore_checkpoint(path: str | Path) -> "OrderedDict[str, Loaded]":
    """All parameters of a MindSpore checkpoint, in file order, as ``load_checkpoint`` gives them.

    Numeric tensors become CPU ``torch.Tensor`` of the stored dtype and shape (a scalar has shape
    ``()``); pieces of a tensor split over several values are joined. ``str`` parameters become
    Python strings, the ``random_op`` RNG state raw bytes, map tensors a tuple of tensors. An
    encrypted, truncated, damaged or non-checkpoint file raises :class:`MindSporeCheckpointError`
    with the file (and the parameter, where known) in a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: MindSpore checkpoint not found")
    if path.stat().st_size == 0:
        raise MindSporeCheckpointError(f"{path}: empty file, not a MindSpore checkpoint")
    return _read(path, memoryview(path.read_bytes()))


def _read(path: Path, data: memoryview) -> "OrderedDict[str, Loaded]":
    if len(data) >= 4 and struct.unpack("<I", data[:4])[0] in _CIPHER_MAGICS:
        raise MindSporeCheckpointError(
            f"{path}: encrypted MindSpore checkpoint (saved with enc_key); decrypt it in MindSpore first "
            "(load_checkpoint(..., dec_key=KEY, dec_mode=MODE), then save_checkpoint without enc_key)")
    data = _check_crc(path, data)
    pieces: "OrderedDict[str, list]" = OrderedDict()
    for offset, value in _values(path, data):
        name = value.tag
        if value.WhichOneof("value") == "maptensor":
            parts = value.maptensor.tensor
            if name in pieces:
                raise MindSporeCheckpointError(f"{path}: map parameter {name!r} appears twice (offset {offset})")
            pieces[name] = ["map", [(t.tensor_type, list(t.dims), t.tensor_content) for t in parts]]
            continue
        tensor = value.tensor
        entry = (tensor.tensor_type, list(tensor.dims))
        if name not in pieces:
            pieces[name] = [entry, [tensor.tensor_content]]
        elif next(reversed(pieces)) != name or pieces[name][0] != entry:
            # Only consecutive pieces with the same type and dims belong to one split tensor.
            raise MindSporeCheckpointError(f"{path}: parameter {name!r} appears twice (offset {offset}) with "
                                           f"{entry[0]} {entry[1]} after {pieces[name][0][0]} {pieces[name][0][1]}")
        else:
            pieces[name][1].append(tensor.tensor_content)
    if not pieces:
        raise MindSporeCheckpointError(f"{path}: no parameters, not a MindSpore checkpoint")
    result: "OrderedDict[str, Loaded]" = OrderedDict()
    for name, (entry, contents) in pieces.items():
        if entry == "map":
            result[name] = tuple(_tensor(path, f"{name}[{k}]", t, d, c) for k, (t, d, c) in enumerate(contents))
        else:
            result[name] = _tensor(path, name, entry[0], entry[1], b"".join(contents))
    return result
