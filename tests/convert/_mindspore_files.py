"""MindSpore .ckpt bytes written by hand, byte for byte in the layout the fixture's SOURCE.md shows."""
from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(key: int, payload: bytes) -> bytes:
    return bytes([key]) + varint(len(payload)) + payload


def ckpt_value(name: str, tensor_type: str, dims, content: bytes) -> bytes:
    """One serialised ``Checkpoint`` holding one value."""
    tensor = b"".join(b"\x08" + varint(d) for d in dims) + field(0x12, tensor_type.encode()) + field(0x1A, content)
    return field(0x0A, field(0x0A, name.encode()) + field(0x12, tensor))
