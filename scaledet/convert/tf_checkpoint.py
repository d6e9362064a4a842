"""Read TensorFlow V2 checkpoints (``<prefix>.index`` + ``<prefix>.data-*``) without TensorFlow.

Why this is written by hand: the only pure-Python reader on PyPI, ``tensorflow-checkpoint-reader``
0.2.2 (last release 2023), calls itself unfinished in its own README and ships TensorFlow's whole
generated protobuf tree, built for an older protobuf. Installing TensorFlow only to read ~1,000
arrays is out of proportion. What the format needs is small:

* ``<prefix>.index`` is a LevelDB-style sorted table. Blocks of prefix-compressed key/value
  entries, each block followed by a compression byte and a masked crc32c; the file ends in a
  48-byte footer (two block handles, padding, magic number). TensorFlow writes it uncompressed.
* The entry with the empty key is a ``BundleHeaderProto`` (shard count, endianness); every other
  key is a variable name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size,
  masked crc32c of the bytes).
* ``<prefix>.data-0000i-of-0000N`` hold the raw tensor bytes.

Maintained libraries do the rest: ``protobuf`` decodes the two message types (declared below as a
descriptor, no generated code), ``crc32c`` computes the checksums, numpy views the bytes.

Every problem is a :class:`TFCheckpointError` with one line naming the file (and the variable).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from scaledet.errors import CheckpointError

__all__ = ["TFCheckpoint", "TFCheckpointError", "TensorInfo", "resolve_prefix"]


class TFCheckpointError(CheckpointError, ValueError):
    """A TF checkpoint that is missing, truncated, corrupt or uses an unsupported feature."""


# -- protobuf messages (tensorflow/core/protobuf/tensor_bundle.proto, checkpoint_state.proto) -----
def _message_classes() -> dict[str, type]:
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="scaledet_tf_bundle.proto", package="scaledet_tf",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("VersionDef", ("producer", 1, F.TYPE_INT32, one, ""), ("min_consumer", 2, F.TYPE_INT32, one, ""),
            ("bad_consumers", 3, F.TYPE_INT32, many, ""))
    message("BundleHeaderProto", ("num_shards", 1, F.TYPE_INT32, one, ""),
            ("endianness", 2, F.TYPE_INT32, one, ""),
            ("version", 3, F.TYPE_MESSAGE, one, ".scaledet_tf.VersionDef"))
    message("Dim", ("size", 1, F.TYPE_INT64, one, ""), ("name", 2, F.TYPE_STRING, one, ""))
    message("TensorShapeProto", ("dim", 2, F.TYPE_MESSAGE, many, ".scaledet_tf.Dim"),
            ("unknown_rank", 3, F.TYPE_BOOL, one, ""))
    message("Extent", ("start", 1, F.TYPE_INT64, one, ""), ("length", 2, F.TYPE_INT64, one, ""))
    message("TensorSliceProto", ("extent", 1, F.TYPE_MESSAGE, many, ".scaledet_tf.Extent"))
    message("BundleEntryProto", ("dtype", 1, F.TYPE_INT32, one, ""),
            ("shape", 2, F.TYPE_MESSAGE, one, ".scaledet_tf.TensorShapeProto"),
            ("shard_id", 3, F.TYPE_INT32, one, ""), ("offset", 4, F.TYPE_INT64, one, ""),
            ("size", 5, F.TYPE_INT64, one, ""), ("crc32c", 6, F.TYPE_FIXED32, one, ""),
            ("slices", 7, F.TYPE_MESSAGE, many, ".scaledet_tf.TensorSliceProto"))
    # TF2 object-based checkpoints: only the fields read here (unknown fields are skipped).
    message("SerializedTensor", ("name", 1, F.TYPE_STRING, one, ""), ("full_name", 2, F.TYPE_STRING, one, ""),
            ("checkpoint_key", 3, F.TYPE_STRING, one, ""))
    message("TrackableObject", ("attributes", 2, F.TYPE_MESSAGE, many, ".scaledet_tf.SerializedTensor"))
    message("TrackableObjectGraph", ("nodes", 1, F.TYPE_MESSAGE, many, ".scaledet_tf.TrackableObject"))
    message("CheckpointState", ("model_checkpoint_path", 1, F.TYPE_STRING, one, ""),
            ("all_model_checkpoint_paths", 2, F.TYPE_STRING, many, ""),
            ("all_model_checkpoint_timestamps", 3, F.TYPE_DOUBLE, many, ""),
            ("last_preserved_timestamp", 4, F.TYPE_DOUBLE, one, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"scaledet_tf.{m.name}"))
            for m in file.message_type}


_MESSAGES = _message_classes()

# TensorFlow DataType enum (tensorflow/core/framework/types.proto) -> TensorFlow's dtype name.
DTYPES: dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "float16", 22: "uint32", 23: "uint64",
}
# Stored element type per dtype name. bfloat16 has no numpy dtype: its uint16 bits are widened
# exactly to float32 on read. Strings have their own layout (see TFCheckpoint._strings).
_NUMPY_STORAGE = {name: ("u2" if name == "bfloat16" else np.dtype(name).str[1:])
                  for name in DTYPES.values() if name != "string"}

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER = 5  # compression type byte + masked crc32c
_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | memoryview) -> int:
    """LevelDB/TensorFlow checksum: crc32c rotated right by 15 bits plus a constant."""
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise TFCheckpointError(f"{where}: corrupt varint at byte {pos}")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


@dataclass(frozen=True)
class TensorInfo:
    """What the index says about one variable."""

    name: str
    dtype: str  # TensorFlow's name: float32, bfloat16, string, ...
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


# -- locating the checkpoint ------------------------------------------------------------------
def _data_suffix(name: str) -> str | None:
    head, sep, tail = name.rpartition(".data-")
    return head if sep and "-of-" in tail else None


def resolve_prefix(path: str | Path) -> Path:
    """The checkpoint prefix for a prefix, its ``.index``/``.data-*`` file, or a directory.

    A directory is resolved through its ``checkpoint`` state file when it has one, else it must
    hold exactly one ``*.index``.
    """
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            message = _MESSAGES["CheckpointState"]()
            try:
                text_format.Parse(state.read_text(), message)
            except (text_format.ParseError, UnicodeDecodeError) as err:
                raise TFCheckpointError(f"{state}: not a checkpoint state file ({err})") from None
            if not message.model_checkpoint_path:
                raise TFCheckpointError(f"{state}: names no model_checkpoint_path")
            prefix = path / message.model_checkpoint_path  # an absolute path replaces `path`
            if not Path(f"{prefix}.index").is_file():
                raise TFCheckpointError(f"{state}: names {prefix}, but {prefix}.index does not exist")
            return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            found = ", ".join(p.name for p in indexes) or "none"
            raise TFCheckpointError(f"{path}: expected one TF checkpoint (*.index) and no 'checkpoint' "
                                    f"state file, found {found}; pass the prefix")
        return indexes[0].with_suffix("")
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    data_prefix = _data_suffix(path.name)
    if data_prefix is not None and path.is_file():
        return path.with_name(data_prefix)
    if Path(f"{path}.index").is_file():
        return path
    raise TFCheckpointError(f"{path}: no TF checkpoint here (neither a directory nor a prefix with "
                            f"{path.name}.index)")


# -- the sorted table of the .index file ----------------------------------------------------------
def _read_block(data: bytes, offset: int, size: int, where: str) -> bytes:
    end = offset + size
    if end + _BLOCK_TRAILER > len(data):
        raise TFCheckpointError(f"{where}: truncated (block at byte {offset} ends past the file end)")
    block = data[offset:end]
    compression = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset:end + 1]) != stored:
        raise TFCheckpointError(f"{where}: checksum mismatch in the block at byte {offset} (corrupt file)")
    if compression != 0:
        raise TFCheckpointError(f"{where}: block at byte {offset} uses compression type {compression}; "
                                "only uncompressed tables (what TensorFlow writes) are supported")
    return block


def _block_entries(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TFCheckpointError(f"{where}: corrupt block (shorter than its restart count)")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise TFCheckpointError(f"{where}: corrupt block (restart count {num_restarts})")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        value_len, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise TFCheckpointError(f"{where}: corrupt block entry at byte {pos}")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _block_handle(value: bytes, where: str) -> tuple[int, int]:
    offset, pos = _varint(value, 0, where)
    size, _ = _varint(value, pos, where)
    return offset, size


def _table_entries(index_path: Path) -> Iterator[tuple[bytes, bytes]]:
    where = str(index_path)
    try:
        data = index_path.read_bytes()
    except OSError as err:
        raise TFCheckpointError(f"{where}: cannot read ({err.strerror})") from None
    if len(data) < _FOOTER_SIZE:
        raise TFCheckpointError(f"{where}: truncated ({len(data)} bytes, shorter than the table footer)")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != _TABLE_MAGIC:
        raise TFCheckpointError(f"{where}: not a TF checkpoint index (bad magic number; truncated or "
                                "another file type)")
    footer = data[len(data) - _FOOTER_SIZE:]
    _, pos = _varint(footer, 0, where)  # metaindex handle: TensorFlow leaves the metaindex empty
    _, pos = _varint(footer, pos, where)
    index_offset, pos = _varint(footer, pos, where)
    index_size, _ = _varint(footer, pos, where)
    index_block = _read_block(data, index_offset, index_size, where)
    for _, handle in _block_entries(index_block, where):
        offset, size = _block_handle(handle, where)
        yield from _block_entries(_read_block(data, offset, size, where), where)


# -- the checkpoint ----------------------------------------------------------------------------
class TFCheckpoint:
    """A TF V2 checkpoint opened from a prefix, one of its files, or a directory.

    Opening reads and checks the index (table checksums, entry messages, dtypes, that every data
    shard exists and is long enough). :meth:`read` checks each tensor's crc32c.
    """

    def __init__(self, path: str | Path):
        self.prefix = resolve_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        self._entries: dict[str, TensorInfo] = {}
        header = None
        where = str(self.index_path)
        for key, value in _table_entries(self.index_path):
            if not key:
                header = self._parse(_MESSAGES["BundleHeaderProto"], value, where, "the header")
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise TFCheckpointError(f"{where}: corrupt variable name {key[:40]!r}") from None
            self._entries[name] = self._entry_info(name, value, where)
        if header is None:
            raise TFCheckpointError(f"{where}: has no bundle header entry (not a TF V2 checkpoint index)")
        if header.endianness not in (0, 1):
            raise TFCheckpointError(f"{where}: unknown endianness {header.endianness}")
        self._byte_order = "<" if header.endianness == 0 else ">"
        self.num_shards = header.num_shards
        self.shard_paths = [Path(f"{self.prefix}.data-{i:05d}-of-{self.num_shards:05d}")
                            for i in range(self.num_shards)]
        self._check_shards()

    @staticmethod
    def _parse(cls: type, value: bytes, where: str, what: str):
        message = cls()
        try:
            message.ParseFromString(value)
        except Exception as err:  # protobuf raises its own DecodeError type
            raise TFCheckpointError(f"{where}: corrupt entry for {what} ({err})") from None
        return message

    def _entry_info(self, name: str, value: bytes, where: str) -> TensorInfo:
        entry = self._parse(_MESSAGES["BundleEntryProto"], value, where, f"variable {name!r}")
        if entry.slices:
            raise TFCheckpointError(f"{where}: variable {name!r} is partitioned into slices; "
                                    "partitioned variables are not supported")
        if entry.dtype not in DTYPES:
            raise TFCheckpointError(f"{where}: variable {name!r} has unsupported TF dtype enum {entry.dtype}")
        if entry.shape.unknown_rank:
            raise TFCheckpointError(f"{where}: variable {name!r} has an unknown rank")
        return TensorInfo(name=name, dtype=DTYPES[entry.dtype], shape=tuple(d.size for d in entry.shape.dim),
                          shard=entry.shard_id, offset=entry.offset, size=entry.size, crc32c=entry.crc32c)

    def _check_shards(self) -> None:
        needed = [0] * self.num_shards
        for info in self._entries.values():
            if not 0 <= info.shard < self.num_shards:
                raise TFCheckpointError(f"{self.index_path}: variable {info.name!r} is in shard {info.shard}, "
                                        f"but the header says {self.num_shards} shard(s)")
            needed[info.shard] = max(needed[info.shard], info.offset + info.size)
        for path, end in zip(self.shard_paths, needed):
            if not path.is_file():
                raise TFCheckpointError(f"{path}: data shard missing")
            if path.stat().st_size < end:
                last = max((i for i in self._entries.values() if self.shard_paths[i.shard] == path),
                           key=lambda i: i.offset + i.size)
                raise TFCheckpointError(f"{path}: truncated ({path.stat().st_size} bytes; variable "
                                        f"{last.name!r} ends at byte {end})")

    # -- mapping-like access ---------------------------------------------------------------------
    @property
    def variables(self) -> dict[str, TensorInfo]:
        """Every variable by name, in the index's (sorted) order."""
        return dict(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def info(self, name: str) -> TensorInfo:
        if name not in self._entries:
            raise KeyError(f"{self.prefix}: no variable {name!r}")
        return self._entries[name]

    def read(self, name: str) -> np.ndarray:
        """The variable as a numpy array (bfloat16 widened to float32, strings as bytes objects)."""
        info = self.info(name)
        path = self.shard_paths[info.shard]
        try:
            with open(path, "rb") as handle:
                handle.seek(info.offset)
                raw = handle.read(info.size)
        except OSError as err:
            raise TFCheckpointError(f"{path}: cannot read variable {name!r} ({err.strerror})") from None
        if len(raw) != info.size:
            raise TFCheckpointError(f"{path}: truncated inside variable {name!r}")
        if info.dtype == "string":
            return self._strings(raw, info, path)
        if masked_crc32c(raw) != info.crc32c:
            raise TFCheckpointError(f"{path}: checksum mismatch for variable {name!r} (corrupt data)")
        dtype = np.dtype(_NUMPY_STORAGE[info.dtype]).newbyteorder(self._byte_order)
        count = int(np.prod(info.shape, dtype=np.int64))
        if count * dtype.itemsize != info.size:
            raise TFCheckpointError(f"{path}: variable {name!r} holds {info.size} bytes, but {info.dtype} "
                                    f"{list(info.shape)} needs {count * dtype.itemsize}")
        array = np.frombuffer(raw, dtype=dtype).reshape(info.shape)
        if info.dtype == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(dtype.newbyteorder("="))

    def _strings(self, raw: bytes, info: TensorInfo, path: Path) -> np.ndarray:
        # Layout: varint64 length of each element, masked crc32c of those lengths (each taken as
        # little-endian uint32 when it fits, uint64 otherwise), then the bytes of every element.
        where = f"{path}: variable {info.name!r}"
        count = int(np.prod(info.shape, dtype=np.int64))
        lengths, pos, crc_input = [], 0, bytearray()
        for _ in range(count):
            length, pos = _varint(raw, pos, where)
            lengths.append(length)
            crc_input += struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length)
        if pos + 4 > len(raw):
            raise TFCheckpointError(f"{where}: truncated string tensor")
        (length_crc,) = struct.unpack_from("<I", raw, pos)
        if masked_crc32c(bytes(crc_input)) != length_crc:
            raise TFCheckpointError(f"{where}: checksum mismatch in the string lengths (corrupt data)")
        crc_input += raw[pos:pos + 4]
        pos += 4
        values = []
        for length in lengths:
            values.append(raw[pos:pos + length])
            pos += length
        crc_input += raw[pos - sum(lengths):pos]
        if pos != len(raw) or masked_crc32c(bytes(crc_input)) != info.crc32c:
            raise TFCheckpointError(f"{where}: checksum mismatch (corrupt data)")
        out = np.empty(count, dtype=object)
        out[:] = values
        return out.reshape(info.shape)

    def variable_names(self) -> dict[str, str]:
        """checkpoint key -> the variable's own name (e.g. ``conv2d_3/kernel``), from the object graph
        a TF2 ``tf.train.Checkpoint`` stores; empty for name-based (TF1 Saver) checkpoints."""
        if OBJECT_GRAPH_KEY not in self._entries:
            return {}
        graph = self._parse(_MESSAGES["TrackableObjectGraph"], self.read(OBJECT_GRAPH_KEY).item(),
                            str(self.shard_paths[self._entries[OBJECT_GRAPH_KEY].shard]), OBJECT_GRAPH_KEY)
        return {a.checkpoint_key: a.full_name for node in graph.nodes for a in node.attributes}

    def read_all(self) -> dict[str, np.ndarray]:
        return {name: self.read(name) for name in self._entries}
