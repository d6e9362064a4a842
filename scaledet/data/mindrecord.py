"""MindRecord data sets (MindSpore's ``FileWriter``) read without MindSpore.

Layout (docs/reference/MINDSPORE_FORMATS.md §2): each shard file starts with a ``uint64`` LE
length and a JSON header (page size, page table, schema, the names of all shards of the set);
page ``p`` starts at ``header_size + p * page_size``. A blob page holds rows back to back, each a
``uint64`` LE length and the row's blob fields; with several blob fields each is preceded by a
``uint64`` big-endian length. int32/int64 array fields are stored compressed (a big-endian
count, 2-bit size codes, then each value in 1/2/4/8 little-endian bytes). The SQLite ``.db``
beside each shard indexes the rows; without it the header's page table can be walked instead.

No maintained reader exists outside MindSpore (whose wheel is far too heavy for a data
dependency), so the format is read by hand here; only SQLite (stdlib) and numpy are used.
Scalar (non-blob) fields live in msgpack "raw" pages; the port writes none, and a schema with
them is refused with a clear message rather than half read.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scaledet.errors import DataError, UsageError

__all__ = ["MindRecordError", "MindRecordReader", "ShardHeader", "read_shard_header", "uncompress_ints"]

_U64_LE = struct.Struct("<Q")
_U64_BE = struct.Struct(">Q")
_U32_BE = struct.Struct(">I")
_INT_TYPES = {"int32": np.dtype("<i4"), "int64": np.dtype("<i8")}
_FLOAT_TYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
INDEX_MODES = ("db", "pages")


class MindRecordError(DataError):
    """A MindRecord shard, index or row that cannot be read as it is."""


@dataclass(frozen=True)
class ShardHeader:
    path: Path
    header_size: int
    page_size: int
    schema: dict[str, dict]  # field -> {"type": ..., "shape": [...]} as FileWriter.add_schema got it
    blob_fields: list[str]  # the order of the fields inside a blob row
    pages: list[dict]  # the page table (empty for a shard without rows)
    shard_addresses: list[str]
    shard_id: int


def read_shard_header(path: str | Path) -> ShardHeader:
    """The JSON header of one shard file."""
    path = Path(path)
    if not path.is_file():
        raise MindRecordError(f"{path}: MindRecord file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_U64_LE.size)
        length = _U64_LE.unpack(head)[0] if len(head) == _U64_LE.size else None
        if length is None or not 0 < length < (1 << 32):
            raise MindRecordError(f"{path}: not a MindRecord file (no header length at its start)")
        if length > size - _U64_LE.size:
            raise MindRecordError(f"{path}: truncated MindRecord file: the header needs {length} bytes, "
                                  f"the file holds {size - _U64_LE.size} after the length")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        schema_entry = header["schema"][0]
        parsed = ShardHeader(path=path, header_size=int(header["header_size"]), page_size=int(header["page_size"]),
                             schema=dict(schema_entry["schema"]), blob_fields=list(schema_entry["blob_fields"]),
                             pages=list(header.get("page") or []),
                             shard_addresses=[str(a) for a in header["shard_addresses"]],
                             shard_id=int(header["shard_id"]))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as err:
        raise MindRecordError(f"{path}: not a MindRecord file (header is not MindRecord JSON: "
                              f"{type(err).__name__}: {err})") from None
    raw_fields = sorted(set(parsed.schema) - set(parsed.blob_fields))
    if raw_fields:
        raise MindRecordError(f"{path}: scalar (non-blob) fields {raw_fields} are stored in msgpack raw pages, "
                              "which this reader does not read; the NAS-FPN port's schema has none")
    return parsed


def uncompress_ints(data: bytes | memoryview, dtype: np.dtype, where: str) -> np.ndarray:
    """Decode one compressed int32/int64 field; the whole of ``data`` must be used."""
    data = memoryview(data)
    if len(data) < 4:
        raise MindRecordError(f"{where}: compressed integer field of {len(data)} bytes has no count")
    count = _U32_BE.unpack(data[:4])[0]
    codes_end = 4 + (count + 3) // 4
    if codes_end > len(data):
        raise MindRecordError(f"{where}: compressed integer field claims {count} values, too many for "
                              f"its {len(data)} bytes")
    packed = np.frombuffer(data[4:codes_end], np.uint8)
    shifts = np.array([6, 4, 2, 0], np.uint8)  # first value in the most significant bits
    codes = ((packed[:, None] >> shifts) & 3).reshape(-1)[:count]
    sizes = (1 << codes.astype(np.int64))
    if codes_end + int(sizes.sum()) != len(data):
        raise MindRecordError(f"{where}: compressed integer field holds {len(data) - codes_end} value bytes, "
                              f"its size codes need {int(sizes.sum())}")
    starts = codes_end + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    raw = np.frombuffer(data, np.uint8)
    values = np.empty(count, np.int64)
    for nbytes, kind in ((1, "i1"), (2, "<i2"), (4, "<i4"), (8, "<i8")):
        chosen = sizes == nbytes
        if chosen.any():
            gathered = raw[starts[chosen, None] + np.arange(nbytes)]
            values[chosen] = np.ascontiguousarray(gathered).view(kind).reshape(-1)
    return values.astype(dtype.newbyteorder("="))


def _field_value(name: str, spec: dict, data: memoryview, where: str) -> Any:
    kind = spec.get("type")
    if kind == "bytes":
        return bytes(data)
    if kind in _INT_TYPES:
        values = uncompress_ints(data, _INT_TYPES[kind], f"{where}, field {name!r}")
    elif kind in _FLOAT_TYPES:
        if len(data) % _FLOAT_TYPES[kind].itemsize:
            raise MindRecordError(f"{where}, field {name!r}: {len(data)} bytes is not a whole number of {kind}")
        values = np.frombuffer(data, _FLOAT_TYPES[kind]).astype(_FLOAT_TYPES[kind].newbyteorder("="))
    else:
        raise MindRecordError(f"{where}, field {name!r}: blob type {kind!r} is not supported")
    shape = [int(s) for s in spec.get("shape", [-1])]
    try:
        return values.reshape(shape)
    except ValueError:
        raise MindRecordError(f"{where}, field {name!r}: {values.size} values do not fit shape {shape}") from None


def decode_blob_row(header: ShardHeader, blob: memoryview, where: str) -> dict[str, Any]:
    """One row's blob (without its 8-byte row length) as ``{field: bytes | numpy array}``."""
    fields = header.blob_fields
    if len(fields) == 1:  # a lone blob field is stored without a length of its own
        return {fields[0]: _field_value(fields[0], header.schema[fields[0]], blob, where)}
    row, pos = {}, 0
    for name in fields:
        if pos + 8 > len(blob):
            raise MindRecordError(f"{where}: corrupt row: it ends before field {name!r}")
        length = _U64_BE.unpack(blob[pos:pos + 8])[0]
        if pos + 8 + length > len(blob):
            raise MindRecordError(f"{where}: corrupt row: field {name!r} needs {length} bytes, "
                                  f"{len(blob) - pos - 8} remain")
        row[name] = _field_value(name, header.schema[name], blob[pos + 8:pos + 8 + length], where)
        pos += 8 + length
    if pos != len(blob):
        raise MindRecordError(f"{where}: corrupt row: {len(blob) - pos} bytes left after the last field")
    return row


def _rows_from_db(header: ShardHeader) -> list[tuple[int, int, int]]:
    db = header.path.with_name(header.path.name + ".db")
    if not db.is_file():
        raise MindRecordError(f"{header.path}: its index {db.name} is missing (FileWriter writes one beside each "
                              "shard); copy it along, or read by walking the header's page table with "
                              "index='pages' (MindRecordDetection / MindRecordReader)")
    try:
        # immutable: read-only folders work and nothing (journal, lock) is written beside the index
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as connection:
            rows = connection.execute("SELECT ROW_ID, PAGE_ID_BLOB, PAGE_OFFSET_BLOB, PAGE_OFFSET_BLOB_END "
                                      "FROM INDEXES ORDER BY ROW_ID").fetchall()
    except sqlite3.Error as err:
        raise MindRecordError(f"{db}: not a MindRecord index ({err})") from None
    return [(int(page), int(start), int(end)) for _, page, start, end in rows]


def _rows_from_pages(header: ShardHeader) -> list[tuple[int, int, int]]:
    """Row locations found by walking each blob page's rows (their 8-byte lengths)."""
    found = []
    size = header.path.stat().st_size
    with open(header.path, "rb") as f:
        for page in sorted((p for p in header.pages if p.get("page_type") == "BLOB_DATA"),
                           key=lambda p: int(p["start_row_id"])):
            page_id, used = int(page["page_id"]), int(page["page_size"])
            base = header.header_size + page_id * header.page_size
            if base + used > size:
                raise MindRecordError(f"{header.path}: truncated MindRecord file: blob page {page_id} ends at byte "
                                      f"{base + used}, the file has {size}")
            f.seek(base)
            content = f.read(used)
            pos, rows = 0, []
            while pos < used:
                if pos + 8 > used:
                    raise MindRecordError(f"{header.path}: corrupt blob page {page_id}: a row length is cut off")
                length = _U64_LE.unpack(content[pos:pos + 8])[0]
                if pos + 8 + length > used:
                    raise MindRecordError(f"{header.path}: corrupt blob page {page_id}: row at page offset {pos} "
                                          f"runs past the page's {used} used bytes")
                rows.append((page_id, pos, pos + 8 + length))
                pos += 8 + length
            expected = int(page["end_row_id"]) - int(page["start_row_id"])
            if len(rows) != expected:
                raise MindRecordError(f"{header.path}: corrupt blob page {page_id}: {len(rows)} rows, its page "
                                      f"table entry says {expected}")
            found.extend(rows)
    return found


def _set_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """One shard file -> every shard of its set (as its header lists them, in the same folder)."""
    if not isinstance(source, (str, Path)):
        return [Path(p) for p in source]
    first = read_shard_header(source)
    files = [first.path.with_name(Path(address).name) for address in first.shard_addresses]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise MindRecordError(f"{first.path}: shards {missing} of this set (listed in its header) are missing")
    return files


class MindRecordReader:
    """The rows of a MindRecord set, addressable by a global index (shards in order, rows by id).

    ``source`` is one shard file (every shard its header lists is read, as ``MindDataset`` does
    with one file) or an explicit list of shard files. ``index="db"`` reads each shard's SQLite
    index; ``index="pages"`` walks the page table in the header instead (no ``.db`` needed).
    """

    def __init__(self, source: str | Path | Sequence[str | Path], index: str = "db") -> None:
        if index not in INDEX_MODES:
            raise UsageError(f"index must be one of {INDEX_MODES}, got {index!r}")
        self.headers = [read_shard_header(p) for p in _set_files(source)]
        if not self.headers:
            raise MindRecordError(f"{source}: no MindRecord shards given")
        first = self.headers[0]
        locations: list[tuple[int, int, int]] = []
        for k, header in enumerate(self.headers):
            if (header.schema, header.blob_fields) != (first.schema, first.blob_fields):
                raise MindRecordError(f"{header.path}: its schema differs from {first.path.name}'s")
            rows = _rows_from_db(header) if index == "db" else _rows_from_pages(header)
            size = header.path.stat().st_size
            for page, start, end in rows:
                offset = header.header_size + page * header.page_size + start
                if end <= start + 8 or header.header_size + page * header.page_size + end > size:
                    raise MindRecordError(f"{header.path}: truncated MindRecord file: row {len(locations)} at byte "
                                          f"{offset} needs {end - start} bytes, the file has {size}")
                locations.append((k, offset, end - start))
        self._locations = np.asarray(locations, np.int64).reshape(-1, 3)
        self.schema = first.schema

    def __len__(self) -> int:
        return len(self._locations)

    def location(self, index: int) -> str:
        shard, offset, _ = self._locations[index]
        return f"{self.headers[shard].path}: row at byte offset {offset}"

    def row_name(self, index: int) -> str:
        """A short name for row ``index``: shard file name and byte offset."""
        shard, offset, _ = self._locations[index]
        return f"{self.headers[shard].path.name}@{offset}"

    def read_row(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        shard, offset, length = (int(v) for v in self._locations[index])
        header, where = self.headers[shard], self.location(index)
        with open(header.path, "rb") as f:
            f.seek(offset)
            data = memoryview(f.read(length))
        if len(data) != length:
            raise MindRecordError(f"{where}: truncated MindRecord file: the row needs {length} bytes, "
                                  f"{len(data)} remain")
        if _U64_LE.unpack(data[:8])[0] != length - 8:
            raise MindRecordError(f"{where}: corrupt row: its length field says {_U64_LE.unpack(data[:8])[0]} "
                                  f"bytes, the index {length - 8}")
        return decode_blob_row(header, data[8:], where)
