"""MindSpore .ckpt reader: the port's fixture checkpoint and hand-built files of the documented layout."""
import binascii
import json

import numpy as np
import pytest
import torch

from scaledet.convert.mindspore_checkpoint import MindSporeCheckpointError, read_mindspore_checkpoint

from _mindspore_files import ckpt_value as _value

FIXTURE = "nasfpn_mindspore_ref"


def _write(tmp_path, data: bytes, name="x.ckpt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _one_line_error(path, match):
    with pytest.raises(MindSporeCheckpointError) as err:
        read_mindspore_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert match in message, message
    return message


def test_fixture_checkpoint_matches_its_parameter_list(shared_data):
    folder = shared_data / FIXTURE
    params = read_mindspore_checkpoint(folder / "nasfpn_narrow.ckpt")
    expected = json.loads((folder / "nasfpn_narrow_params.json").read_text())
    assert len(params) == expected["num_tensors"] == 410
    assert [(n, list(t.shape)) for n, t in params.items()] == [(p["name"], p["shape"]) for p in expected["params"]]
    assert {p["dtype"] for p in expected["params"]} == {"Float32"}
    assert all(t.dtype == torch.float32 for t in params.values())
    assert sum(t.numel() for t in params.values()) == expected["num_values"]
    # The first bytes of the file's first tensor (conv1.weight), read independently.
    raw = (folder / "nasfpn_narrow.ckpt").read_bytes()
    start = raw.index(b"Float32") + len(b"Float32") + 1 + 3  # key 0x1a + 3-byte varint length
    assert params["network.backbone.conv1.weight"].flatten()[:4].tolist() == \
        np.frombuffer(raw[start:start + 16], "<f4").tolist()


def test_truncated_fixture_names_file_and_parameter(shared_data, tmp_path):
    raw = (shared_data / FIXTURE / "nasfpn_narrow.ckpt").read_bytes()
    path = _write(tmp_path, raw[: len(raw) // 2], "half.ckpt")
    message = _one_line_error(path, "truncated checkpoint: parameter 'network.")
    assert "more bytes than the file has" in message
    _one_line_error(_write(tmp_path, raw[:3], "three.ckpt"), "truncated checkpoint")


def test_not_a_checkpoint(shared_data, tmp_path):
    jpeg = next((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))
    _one_line_error(_write(tmp_path, jpeg.read_bytes(), "photo.ckpt"), "not a MindSpore checkpoint")
    _one_line_error(_write(tmp_path, b"", "empty.ckpt"), "empty file")


def test_dtypes_scalars_and_split_tensors(tmp_path):
    weight = np.arange(12, dtype="<f2").reshape(3, 4)
    big = np.arange(10, dtype="<i4")
    bf16 = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    data = b"".join([
        _value("w", "Float16", [3, 4], weight.tobytes()),
        _value("step", "Int32", [1], np.int32(7).tobytes()),
        _value("momentum", "Float32", [], np.float32(0.9).tobytes()),    # MindSpore 2.x scalar
        _value("old_scalar", "Float64", [0], np.float64(2.5).tobytes()),  # older writers' scalar
        _value("big", "Int32", [10], big[:6].tobytes()),                  # a tensor split in two pieces
        _value("big", "Int32", [10], big[6:].tobytes()),
        _value("flags", "Bool", [2], b"\x01\x00"),
        _value("half", "BFloat16", [2], bf16.view(torch.int16).numpy().tobytes()),
        _value("note", "str", [0], "hello".encode()),
    ])
    params = read_mindspore_checkpoint(_write(tmp_path, data))
    assert list(params) == ["w", "step", "momentum", "old_scalar", "big", "flags", "half", "note"]
    assert params["w"].dtype == torch.float16 and params["w"].tolist() == weight.tolist()
    assert params["step"].dtype == torch.int32 and params["step"].shape == (1,) and int(params["step"]) == 7
    assert params["momentum"].shape == () and params["momentum"].item() == pytest.approx(0.9)
    assert params["old_scalar"].shape == () and params["old_scalar"].item() == 2.5
    assert params["big"].tolist() == list(range(10))
    assert params["flags"].tolist() == [True, False]
    assert params["half"].dtype == torch.bfloat16 and params["half"].tolist() == [1.5, -2.0]
    assert params["note"] == "hello"


def test_crc_trailer_checked(tmp_path):
    body = _value("w", "Float32", [2], np.float32([1, 2]).tobytes())
    good = body + b"crc_num" + binascii.crc32(body).to_bytes(10, "big")
    assert read_mindspore_checkpoint(_write(tmp_path, good, "good.ckpt"))["w"].tolist() == [1.0, 2.0]
    bad = body + b"crc_num" + (binascii.crc32(body) ^ 1).to_bytes(10, "big")
    _one_line_error(_write(tmp_path, bad, "bad.ckpt"), "damaged checkpoint")


def test_bad_content_and_encryption(tmp_path):
    _one_line_error(_write(tmp_path, _value("w", "Float32", [3], b"\x00" * 8), "short.ckpt"),
                    "parameter 'w': dims [3] need 3 values, the content holds 2")
    _one_line_error(_write(tmp_path, _value("w", "Complex64", [1], b"\x00" * 8), "type.ckpt"),
                    "unknown tensor_type 'Complex64'")
    twice = _value("w", "Float32", [1], b"\x00" * 4) + _value("v", "Float32", [1], b"\x00" * 4) + \
        _value("w", "Float32", [1], b"\x00" * 4)
    _one_line_error(_write(tmp_path, twice, "twice.ckpt"), "parameter 'w' appears twice")
    encrypted = (0x7F3A5ED8).to_bytes(4, "little") + b"\x00" * 60
    _one_line_error(_write(tmp_path, encrypted, "enc.ckpt"), "encrypted MindSpore checkpoint")
